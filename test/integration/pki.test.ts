import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Layout } from '../../src/oci/layout.js';
import { startServer } from '../../src/site/server.js';
import { initPki, issueServerCert } from '../../src/sign/pki.js';
import { execFileP, tmpdir } from '../helpers/peers.js';

let work: string;
beforeAll(async () => {
  work = await tmpdir('ferry-pki-');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const openssl = async (args: string[]) => (await execFileP('openssl', args)).stdout;
const mode = async (f: string) => (await fs.stat(f)).mode & 0o777;

describe('the site PKI', () => {
  it('makes a CA and a registry certificate that openssl verifies for every name and IP', async () => {
    const r = await initPki({ domain: 'site.test', ips: ['10.0.0.5', 'fd00::5'], outDir: path.join(work, 'a') });
    expect([r.caReused, r.serverCert]).toEqual([false, 'issued']);
    expect(await mode(r.caKey)).toBe(0o600);
    expect(await mode(r.key)).toBe(0o600);
    expect(await openssl(['verify', '-purpose', 'sslserver', '-CAfile', r.caCert, r.cert])).toBe(`${r.cert}: OK\n`);
    const ca = await openssl(['x509', '-in', r.caCert, '-noout', '-text']);
    expect(ca).toMatch(/CA:TRUE, pathlen:0/);
    expect(ca).toMatch(/Certificate Sign, CRL Sign/);
    const sans = await openssl(['x509', '-in', r.cert, '-noout', '-ext', 'subjectAltName']);
    for (const want of ['DNS:registry.site.test', 'DNS:localhost', 'IP Address:10.0.0.5', 'IP Address:FD00:0:0:0:0:0:0:5', 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1']) {
      expect(sans).toContain(want);
    }
    expect(await openssl(['x509', '-in', r.cert, '-noout', '-checkhost', 'registry.site.test'])).toMatch(/does match/);
    expect(await openssl(['x509', '-in', r.cert, '-noout', '-checkhost', 'other.site.test'])).toMatch(/does NOT match/);
    expect(await openssl(['x509', '-in', r.cert, '-noout', '-checkip', '::1'])).toMatch(/does match/);
    expect(r.caFingerprint).toBe((await openssl(['x509', '-in', r.caCert, '-noout', '-fingerprint', '-sha256'])).trim().split('=')[1]);
  });

  it('serves TLS that curl accepts for registry.<domain> with only the site CA', async () => {
    const r = await initPki({ domain: 'site.test', outDir: path.join(work, 'tls') });
    await Layout.open(path.join(work, 'tls-bundle', 'images'));
    const srv = await startServer({ bundleDir: path.join(work, 'tls-bundle'), listen: '127.0.0.1:0', tls: { cert: r.cert, key: r.key } });
    try {
      const port = srv.address.port;
      const { stdout } = await execFileP('curl', ['-sSf', '--cacert', r.caCert, '--resolve', `registry.site.test:${port}:127.0.0.1`, `https://registry.site.test:${port}/healthz`]);
      expect(stdout).toBe('ok\n');
      // A name the certificate does not carry fails verification (curl exit 60).
      const wrong = await execFileP('curl', ['-sS', '--cacert', r.caCert, '--resolve', `other.site.test:${port}:127.0.0.1`, `https://other.site.test:${port}/healthz`]).then(() => 0, (e: { code: number }) => e.code);
      expect(wrong).toBe(60);
    } finally {
      await srv.close();
    }
  });

  it('keeps an existing CA on re-run, and re-issues the server certificate only when its names change', async () => {
    const dir = path.join(work, 'rerun');
    const first = await initPki({ domain: 'site.test', ips: ['10.0.0.5'], outDir: dir });
    const caBytes = await fs.readFile(first.caCert);
    const caKeyBytes = await fs.readFile(first.caKey);
    const certBytes = await fs.readFile(first.cert);
    const again = await initPki({ domain: 'site.test', ips: ['10.0.0.5'], outDir: dir });
    expect([again.caReused, again.serverCert]).toEqual([true, 'kept']);
    expect((await fs.readFile(again.cert)).equals(certBytes)).toBe(true);
    const more = await initPki({ domain: 'site.test', ips: ['10.0.0.5', '10.0.0.6'], outDir: dir });
    expect([more.caReused, more.serverCert]).toEqual([true, 'issued']);
    expect((await fs.readFile(more.caCert)).equals(caBytes)).toBe(true);
    expect((await fs.readFile(more.caKey)).equals(caKeyBytes)).toBe(true);
    expect(await openssl(['x509', '-in', more.cert, '-noout', '-checkip', '10.0.0.6'])).toMatch(/does match/);
    expect(await openssl(['verify', '-CAfile', more.caCert, more.cert])).toMatch(/OK/);
  });

  it('refuses a half-present or mismatched CA instead of replacing it', async () => {
    const half = path.join(work, 'half');
    const r = await initPki({ domain: 'site.test', outDir: half });
    await fs.rm(r.caKey);
    await expect(initPki({ domain: 'site.test', outDir: half })).rejects.toMatchObject({ code: 'PKI_INVALID', message: expect.stringContaining('ca.crt but no ca.key'), hint: expect.stringContaining('backup') });
    expect(await fs.readdir(half)).not.toContain('ca.key');
    const other = await initPki({ domain: 'other.test', outDir: path.join(work, 'other') });
    await fs.copyFile(other.caKey, r.caKey);
    await expect(initPki({ domain: 'site.test', outDir: half })).rejects.toMatchObject({ code: 'PKI_INVALID', message: expect.stringContaining('does not belong') });
  });

  it('issues further server certificates from the CA, and says when there is none', async () => {
    const r = await initPki({ domain: 'site.test', outDir: path.join(work, 'issue') });
    const s2 = await issueServerCert({ caDir: path.join(work, 'issue'), names: ['s2.site.test', 'registry.site.test'], ips: ['10.0.0.12'], outPrefix: path.join(work, 'issue', 'nodes', 's2') });
    expect(s2.cert).toBe(path.join(work, 'issue', 'nodes', 's2.crt'));
    expect(await mode(s2.key)).toBe(0o600);
    expect(await openssl(['verify', '-purpose', 'sslserver', '-CAfile', r.caCert, s2.cert])).toMatch(/OK/);
    expect(await openssl(['x509', '-in', s2.cert, '-noout', '-checkhost', 's2.site.test'])).toMatch(/does match/);
    await expect(issueServerCert({ caDir: path.join(work, 'none'), names: ['x.site.test'], outPrefix: path.join(work, 'none', 'x') })).rejects.toMatchObject({ code: 'PKI_MISSING', hint: expect.stringContaining('ferry pki init') });
    await expect(issueServerCert({ caDir: path.join(work, 'issue'), names: [], outPrefix: path.join(work, 'x') })).rejects.toMatchObject({ code: 'PKI_INVALID' });
  });

  it('rejects a malformed domain or IP before writing anything', async () => {
    const dir = path.join(work, 'bad');
    await expect(initPki({ domain: 'bad_domain!', outDir: dir })).rejects.toMatchObject({ code: 'PKI_INVALID', message: expect.stringContaining('bad_domain!') });
    await expect(initPki({ domain: 'site.test', ips: ['10.0.0.300'], outDir: dir })).rejects.toMatchObject({ code: 'PKI_INVALID', message: expect.stringContaining('10.0.0.300') });
    await expect(fs.access(dir)).rejects.toThrow();
  });
});
