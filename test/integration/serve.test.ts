import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType } from '../../src/oci/media.js';
import { SPEC_ERROR_CODES } from '../../src/site/respond.js';
import { startServer, type SiteServer } from '../../src/site/server.js';
import { initPki } from '../../src/sign/pki.js';
import { execFileP, freePort, tmpdir, waitFor } from '../helpers/peers.js';
import { buildSiteBundle, extractHelm, helmEnv, metric, raw, request, type SiteBundle } from '../helpers/site.js';

let work: string;
let b: SiteBundle;
let ca: Buffer;
let certDir: string;
let caFile: string;
let serverKey: string;
let helm: string;
let srv: SiteServer;
let plain: SiteServer;
let port: number;
let plainPort: number;
const logs: string[] = [];
/** Every body the server sent in this file, to prove the secret never leaves. */
const seen: string[] = [];

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const get = async (p: string, o: { method?: string; headers?: Record<string, string> } = {}) => {
  const r = await request(`${srv.url}${p}`, { ...o, ca });
  seen.push(r.text);
  return r;
};
const skopeo = (args: string[]) => execFileP('skopeo', args, { maxBuffer: 64 << 20, encoding: 'buffer' });
/** Splits `registry/path:tag` into the path and tag the site service serves it under. */
const served = (ref: string) => {
  const slash = ref.indexOf('/');
  return ref.slice(slash + 1);
};

beforeAll(async () => {
  work = await tmpdir('ferry-serve-');
  helm = await extractHelm(work);
  b = await buildSiteBundle(work, { helm, bigBytes: 24 << 20 });
  const pki = await initPki({ domain: 'site.test', outDir: path.join(work, 'pki') });
  caFile = pki.caCert;
  serverKey = pki.key;
  ca = await fs.readFile(caFile);
  certDir = path.join(work, 'certs');
  await fs.mkdir(certDir);
  await fs.copyFile(caFile, path.join(certDir, 'ca.crt'));
  // A short headers timeout for the trickle tests; the request timeout (which also bounds a TLS
  // handshake) stays long, or a loaded machine's curl and skopeo handshakes are cut mid-way.
  const limits = { headersTimeoutMs: 1500, requestTimeoutMs: 20_000 };
  srv = await startServer({ bundleDir: b.dir, listen: '127.0.0.1:0', tls: { cert: pki.cert, key: pki.key }, log: (l) => logs.push(l), limits });
  plain = await startServer({ bundleDir: b.dir, listen: '127.0.0.1:0', log: (l) => logs.push(l), limits });
  port = srv.address.port;
  plainPort = plain.address.port;
});
afterAll(async () => {
  await srv?.close();
  await plain?.close();
  await fs.rm(work, { recursive: true, force: true });
});

describe('the site service speaks the distribution pull API to real clients', () => {
  it('answers /v2/ over TLS that the site CA vouches for, and only that CA', async () => {
    const { stdout } = await execFileP('curl', ['-sS', '-D-', '--cacert', caFile, `${srv.url}/v2/`]);
    expect(stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(stdout).toMatch(/^docker-distribution-api-version: registry\/2\.0\r$/im);
    expect(stdout.trim().endsWith('{}')).toBe(true);
    const head = await get('/v2/', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    // Without the site CA, curl refuses the certificate (exit 60).
    const untrusted = await execFileP('curl', ['-sS', `${srv.url}/v2/`]).then(() => 0, (e: { code: number }) => e.code);
    expect(untrusted).toBe(60);
  });

  it('lets skopeo inspect and copy --all every image by its upstream path, digests intact', async () => {
    for (const [ref, desc] of Object.entries(b.refs)) {
      if (ref.includes('@') || ref.startsWith('ghcr.io/library/') || ref.startsWith('docker.io/fx/leak')) continue;
      const name = served(ref);
      const rawManifest = (await skopeo(['inspect', '--raw', '--cert-dir', certDir, `docker://127.0.0.1:${port}/${name}`])).stdout;
      expect(sha(rawManifest), ref).toBe(desc.digest);
      if (ref.startsWith('docker.io/fx/big')) continue;
      const dest = path.join(work, 'copies', ref.replace(/[/:@]/g, '_'));
      await fs.mkdir(dest, { recursive: true });
      await skopeo(['copy', '--all', '--src-cert-dir', certDir, `docker://127.0.0.1:${port}/${name}`, `dir:${dest}`]);
      // dir: keeps the manifest bytes, so the top digest must be the bundle's.
      expect(sha(await fs.readFile(path.join(dest, 'manifest.json'))), ref).toBe(desc.digest);
      for (const f of await fs.readdir(dest)) {
        if (/^[a-f0-9]{64}$/.test(f)) expect(sha(await fs.readFile(path.join(dest, f)))).toBe(`sha256:${f}`);
      }
    }
    // skopeo's own view of a multi-arch index: it picks the platform it is asked for.
    const { stdout } = await skopeo(['inspect', '--cert-dir', certDir, '--override-arch', 'arm64', `docker://127.0.0.1:${port}/coredns/coredns:v1.11.3`]);
    expect(JSON.parse(stdout.toString())).toMatchObject({ Architecture: 'arm64', Os: 'linux' });
  });

  it('serves a path shared by registries from the one ?ns= names, else docker.io first, else sorted', async () => {
    const busybox = b.refs['docker.io/library/busybox:1.36']!.digest;
    const ghcrBusybox = b.refs['ghcr.io/library/busybox:1.36']!.digest;
    expect(busybox).not.toBe(ghcrBusybox);
    const digestOf = async (p: string) => {
      const r = await get(p, { method: 'HEAD' });
      return r.status === 200 ? r.headers['docker-content-digest'] : r.status;
    };
    expect(await digestOf('/v2/library/busybox/manifests/1.36')).toBe(busybox);
    expect(await digestOf('/v2/library/busybox/manifests/1.36?ns=docker.io')).toBe(busybox);
    expect(await digestOf('/v2/library/busybox/manifests/1.36?ns=ghcr.io')).toBe(ghcrBusybox);
    expect(await digestOf('/v2/library/busybox/manifests/1.36?ns=quay.io')).toBe(404);
    // A client that cannot send ns may put the registry first in the path; Docker Hub's short names work.
    expect(await digestOf('/v2/ghcr.io/library/busybox/manifests/1.36')).toBe(ghcrBusybox);
    expect(await digestOf('/v2/busybox/manifests/1.36')).toBe(busybox);
    // fx/docker: quay.io has v1, ghcr.io has v2; each tag comes from the registry that has it.
    expect(await digestOf('/v2/fx/docker/manifests/v1')).toBe(b.refs['quay.io/fx/docker:v1']!.digest);
    expect(await digestOf('/v2/fx/docker/manifests/v2')).toBe(b.refs['ghcr.io/fx/docker:v2']!.digest);
    expect(await digestOf('/v2/fx/docker/manifests/v2?ns=quay.io')).toBe(404);
    expect((await get('/v2/fx/docker/tags/list')).json()).toEqual({ name: 'fx/docker', tags: ['v1', 'v2'] });
    expect((await get('/v2/fx/docker/tags/list?ns=quay.io')).json()).toEqual({ name: 'fx/docker', tags: ['v1'] });
  });

  it('serves child manifests by digest with their own media type, and only blobs of the named repository', async () => {
    const index = b.refs['registry.k8s.io/coredns/coredns:v1.11.3']!;
    const top = await get(`/v2/coredns/coredns/manifests/v1.11.3?ns=registry.k8s.io`);
    expect(top.status).toBe(200);
    expect(top.headers['content-type']).toBe(MediaType.ociIndex);
    expect(top.headers['docker-content-digest']).toBe(index.digest);
    expect(top.headers.etag).toBe(`"${index.digest}"`);
    expect(Number(top.headers['content-length'])).toBe(index.size);
    const child = top.json<{ manifests: { digest: string; size: number }[] }>().manifests[1]!;
    const m = await get(`/v2/coredns/coredns/manifests/${child.digest}`);
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toBe(MediaType.ociManifest);
    expect(sha(m.body)).toBe(child.digest);
    const head = await get(`/v2/coredns/coredns/manifests/${child.digest}`, { method: 'HEAD' });
    expect([head.status, head.body.length, Number(head.headers['content-length'])]).toEqual([200, 0, child.size]);
    // Docker-typed images keep their Docker media types.
    const list = await get('/v2/library/haproxy/manifests/3.0');
    expect(list.headers['content-type']).toBe(MediaType.dockerList);
    const layer = m.json<{ layers: { digest: string; size: number }[] }>().layers[1]!;
    const blob = await get(`/v2/coredns/coredns/blobs/${layer.digest}`);
    expect([blob.status, blob.headers['content-type'], blob.headers['docker-content-digest'], blob.headers.etag]).toEqual([200, 'application/octet-stream', layer.digest, `"${layer.digest}"`]);
    expect(sha(blob.body)).toBe(layer.digest);
    // The same layer exists in the store, but pause's images do not reach it.
    const other = await get(`/v2/pause/blobs/${layer.digest}`);
    expect([other.status, other.json<{ errors: { code: string }[] }>().errors[0]!.code]).toEqual([404, 'BLOB_UNKNOWN']);
    const notMine = await get(`/v2/pause/manifests/${child.digest}`);
    expect([notMine.status, notMine.json<{ errors: { code: string }[] }>().errors[0]!.code]).toEqual([404, 'MANIFEST_UNKNOWN']);
    // A digest-only index.json entry is reachable by digest in its repository.
    const byDigest = await get(`/v2/pause/manifests/${b.refs['registry.k8s.io/pause:3.10']!.digest}`);
    expect(byDigest.status).toBe(200);
    const pinned = await get(`/v2/pause/manifests/${b.fx.images['dockerlist:v1']!.digest}?ns=registry.k8s.io`);
    expect([pinned.status, pinned.headers['content-type']]).toEqual([200, MediaType.dockerList]);
    // A client with the current ETag gets 304 and no body.
    const cached = await get(`/v2/coredns/coredns/blobs/${layer.digest}`, { headers: { 'If-None-Match': `"${layer.digest}"` } });
    expect([cached.status, cached.body.length]).toEqual([304, 0]);
  });

  it('honours one byte range per request and refuses unsatisfiable ones with 416', async () => {
    const layer = b.big!.layer;
    const url = `/v2/fx/big/blobs/${layer.digest}`;
    const full = await get(url);
    expect(full.body.length).toBe(layer.size);
    const part = await get(url, { headers: { Range: 'bytes=1000-1999' } });
    expect([part.status, part.headers['content-range'], Number(part.headers['content-length'])]).toEqual([206, `bytes 1000-1999/${layer.size}`, 1000]);
    expect(part.body.equals(full.body.subarray(1000, 2000))).toBe(true);
    const tail = await get(url, { headers: { Range: 'bytes=-10' } });
    expect([tail.status, tail.headers['content-range']]).toEqual([206, `bytes ${layer.size - 10}-${layer.size - 1}/${layer.size}`]);
    expect(tail.body.equals(full.body.subarray(layer.size - 10))).toBe(true);
    const open = await get(url, { headers: { Range: `bytes=${layer.size - 5}-` } });
    expect([open.status, open.body.length]).toEqual([206, 5]);
    const clamped = await get(url, { headers: { Range: `bytes=${layer.size - 5}-${layer.size + 100}` } });
    expect([clamped.status, clamped.headers['content-range']]).toEqual([206, `bytes ${layer.size - 5}-${layer.size - 1}/${layer.size}`]);
    for (const bad of [`bytes=${layer.size}-`, 'bytes=5-2', 'bytes=abc', 'bytes=-0', 'bytes=99999999999999999999999-']) {
      const r = await get(url, { headers: { Range: bad } });
      expect([r.status, r.headers['content-range'], r.json<{ errors: { code: string }[] }>().errors[0]!.code], bad).toEqual([416, `bytes */${layer.size}`, 'UNSUPPORTED']);
    }
    // Other units and several ranges are ignored (RFC 9110 allows it): the whole blob comes back.
    for (const ignored of ['items=0-1', 'bytes=0-1,5-6']) {
      const r = await get(url, { headers: { Range: ignored }, method: 'HEAD' });
      expect([r.status, Number(r.headers['content-length'])], ignored).toEqual([200, layer.size]);
    }
    // curl resumes a cut download with Range and gets the same bytes.
    const dl = path.join(work, 'resumed.bin');
    await fs.writeFile(dl, full.body.subarray(0, 5_000_000));
    await execFileP('curl', ['-sSf', '--cacert', caFile, '-C', '-', '-o', dl, `${srv.url}${url}`]);
    expect(sha(await fs.readFile(dl))).toBe(layer.digest);
  });

  it('pages /v2/_catalog and tags/list with n and last, linking the next page', async () => {
    const all = (await get('/v2/_catalog')).json<{ repositories: string[] }>().repositories;
    expect(all).toEqual(['charts/c', 'coredns/coredns', 'fx/big', 'fx/docker', 'fx/leak', 'fx/multi', 'library/busybox', 'library/haproxy', 'pause']);
    const pages: string[] = [];
    let next: string | undefined = '/v2/_catalog?n=2';
    let hops = 0;
    while (next && hops++ < 20) {
      const r = await get(next);
      const page = r.json<{ repositories: string[] }>().repositories;
      expect(page.length).toBeLessThanOrEqual(2);
      pages.push(...page);
      const link = r.headers.link as string | undefined;
      next = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
    }
    expect(pages).toEqual(all);
    expect(hops).toBe(5);
    expect((await get('/v2/_catalog?ns=quay.io')).json()).toEqual({ repositories: ['fx/docker'] });
    const t1 = await get('/v2/pause/tags/list?n=1');
    expect(t1.json()).toEqual({ name: 'pause', tags: ['3.10'] });
    expect(t1.headers.link).toBe('</v2/pause/tags/list?n=1&last=3.10>; rel="next"');
    const t2 = await get('/v2/pause/tags/list?n=5&last=3.10');
    expect(t2.json()).toEqual({ name: 'pause', tags: ['3.8', '3.9'] });
    expect(t2.headers.link).toBeUndefined();
    const bad = await get('/v2/pause/tags/list?n=-1');
    expect([bad.status, bad.json<{ errors: { code: string }[] }>().errors[0]!.code]).toEqual([400, 'UNSUPPORTED']);
  });

  it('answers errors with the spec codes, statuses and JSON body', async () => {
    const cases: [string, number, string][] = [
      ['/v2/nope/manifests/latest', 404, 'NAME_UNKNOWN'],
      ['/v2/pause/manifests/9.99', 404, 'MANIFEST_UNKNOWN'],
      [`/v2/pause/manifests/sha256:${'0'.repeat(64)}`, 404, 'MANIFEST_UNKNOWN'],
      [`/v2/pause/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
      ['/v2/pause/blobs/sha256:1234', 400, 'DIGEST_INVALID'],
      ['/v2/pause/manifests/md5:abc', 400, 'DIGEST_INVALID'],
      ['/v2/Pause/manifests/3.10', 400, 'NAME_INVALID'],
      // No manifest has a tag outside the grammar: unknown, in the spec's words.
      ['/v2/pause/manifests/-bad', 404, 'MANIFEST_UNKNOWN'],
      [`/v2/pause/manifests/sha512:${'ab'.repeat(64)}`, 404, 'MANIFEST_UNKNOWN'],
      [`/v2/pause/blobs/sha512:${'ab'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
      ['/v2/pause/blobs/sha512:abc', 400, 'DIGEST_INVALID'],
      ['/v2/pause/tags/list?ns=example.org', 404, 'NAME_UNKNOWN'],
    ];
    for (const [p, status, code] of cases) {
      const r = await get(p);
      expect([r.status, r.headers['content-type']], p).toEqual([status, 'application/json']);
      expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
      const e = r.json<{ errors: { code: string; message: string }[] }>().errors[0]!;
      expect([e.code, typeof e.message], p).toEqual([code, 'string']);
    }
  });

  it('is read-only: every write gets 405 UNSUPPORTED, and skopeo cannot push', async () => {
    for (const [method, p] of [
      ['POST', '/v2/pause/blobs/uploads/'],
      ['PUT', '/v2/pause/manifests/3.10'],
      ['PATCH', '/v2/pause/blobs/uploads/abc'],
      ['DELETE', `/v2/pause/manifests/${b.refs['registry.k8s.io/pause:3.10']!.digest}`],
      ['DELETE', '/files/versions.json'],
    ] as const) {
      const r = await get(p, { method });
      expect([r.status, r.headers.allow, r.json<{ errors: { code: string }[] }>().errors[0]!.code], `${method} ${p}`).toEqual([405, 'GET, HEAD', 'UNSUPPORTED']);
    }
    const push = await execFileP('skopeo', ['copy', '--src-cert-dir', certDir, '--dest-cert-dir', certDir, `docker://127.0.0.1:${port}/pause:3.10`, `docker://127.0.0.1:${port}/pushed:1`]).then(
      () => 'pushed',
      (e: { stderr: string }) => e.stderr,
    );
    expect(push).toMatch(/405|UNSUPPORTED|unsupported/i);
    expect((await get('/v2/pushed/tags/list')).status).toBe(404);
  });

  it('lets helm pull a chart stored in the layout as an OCI artifact', async () => {
    const out = path.join(work, 'helm-out');
    await fs.mkdir(out);
    await execFileP(helm, ['pull', `oci://127.0.0.1:${port}/charts/c`, '--version', '0.1.0', '--ca-file', caFile, '-d', out], { env: helmEnv(work) });
    const got = await fs.readFile(path.join(out, 'c-0.1.0.tgz'));
    expect(sha(got)).toBe(b.chart!.digest);
    const { stdout } = await execFileP(helm, ['show', 'chart', path.join(out, 'c-0.1.0.tgz')], { env: helmEnv(work) });
    expect(stdout).toMatch(/^name: c$/m);
  });
});

describe('the binary repository at /files/', () => {
  it('mirrors with curl into a tree where sha256sum -c checksums.txt passes', async () => {
    const sums = await get('/files/checksums.txt');
    expect(sums.status).toBe(200);
    expect(sums.headers['content-type']).toBe('text/plain; charset=utf-8');
    // Only files/ lines, relative to files/.
    expect(sums.text).not.toMatch(/bundle\.json|images\/|files\//);
    const lines = sums.text.trim().split('\n');
    expect(lines.length).toBe(Object.keys(b.files).length);
    const dl = path.join(work, 'dl');
    await fs.mkdir(dl);
    await fs.writeFile(path.join(dl, 'checksums.txt'), sums.body);
    for (const line of lines) {
      const rel = line.slice(66);
      const url = `${srv.url}/files/${rel.split('/').map(encodeURIComponent).join('/')}`;
      await execFileP('curl', ['-sSf', '--cacert', caFile, '--create-dirs', '-o', path.join(dl, rel), url]);
    }
    const { stdout } = await execFileP('sha256sum', ['-c', 'checksums.txt'], { cwd: dl });
    expect(stdout.trim().split('\n').filter((l) => l.endsWith(': OK')).length).toBe(lines.length);
    expect(await fs.readFile(path.join(dl, 'versions.json'), 'utf8')).toBe(b.versionsJson);
    const v = await get('/files/versions.json');
    expect([v.headers['content-type'], v.json()]).toEqual(['application/json', JSON.parse(b.versionsJson)]);
    // A corrupted copy fails the same check: the test above could fail.
    await fs.appendFile(path.join(dl, 'crictl/v1.31.1/linux-amd64/crictl'), 'x');
    expect(await execFileP('sha256sum', ['-c', 'checksums.txt'], { cwd: dl }).then(() => 0, (e: { code: number }) => e.code)).toBe(1);
  });

  it('lists every file with version, arch, size and sha256 on an HTML page, escaped', async () => {
    for (const p of ['/files/', '/files/index.html']) {
      const r = await get(p);
      expect([r.status, r.headers['content-type']]).toEqual([200, 'text/html; charset=utf-8']);
      expect(r.headers['content-security-policy']).toContain("default-src 'none'");
      const rows = r.text.split('\n').filter((l) => l.startsWith('<tr><td>'));
      expect(rows.length).toBe(Object.keys(b.files).length);
      const kubeadm = rows.find((l) => l.includes('kubeadm/v1.31.2/linux-arm64/kubeadm'))!;
      expect(kubeadm).toContain('<td>kubeadm</td><td>v1.31.2</td><td>arm64</td><td class="n">280000</td>');
      expect(kubeadm).toContain(b.files['kubeadm/v1.31.2/linux-arm64/kubeadm']!.sha256);
      expect(r.text).toContain('odd&#60;b&#62;&#38;&#34;x');
      expect(r.text).toContain('href="/files/odd%3Cb%3E%26%22x/v1/linux-amd64/odd%3Cb%3E%26%22x"');
      expect(r.text).not.toContain('<b>');
      expect(r.text).not.toContain('evil');
    }
    const redirect = await get('/files');
    expect([redirect.status, redirect.headers.location]).toEqual([301, '/files/']);
  });
});

describe('health, metrics and the access log', () => {
  it('reports requests by route and status, bytes sent and in-flight requests', async () => {
    expect((await get('/healthz')).text).toBe('ok\n');
    const layer = b.big!.layer;
    const before = metric(srv.metrics(), 'ferry_serve_sent_bytes_total', { route: 'blob' });
    await get(`/v2/fx/big/blobs/${layer.digest}`);
    await get('/v2/nope/manifests/x');
    // The server counts and logs a request when its response closes, which can trail the client by a tick.
    const blobLine = `"GET /v2/fx/big/blobs/${layer.digest} HTTP/1.1" 200 ${layer.size} `;
    await waitFor(async () => logs.some((l) => l.includes(blobLine)) && logs.some((l) => l.includes('"GET /v2/nope/manifests/x HTTP/1.1" 404 ')), 'the access log lines');
    const m = await get('/metrics');
    expect(m.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(m.text).toMatch(/^# TYPE ferry_serve_requests_total counter$/m);
    expect(metric(m.text, 'ferry_serve_requests_total', { route: 'blob', status: '200' })).toBeGreaterThanOrEqual(1);
    expect(metric(m.text, 'ferry_serve_requests_total', { route: 'manifest', status: '404' })).toBeGreaterThanOrEqual(1);
    expect(metric(m.text, 'ferry_serve_sent_bytes_total', { route: 'blob' }) - before).toBe(layer.size);
    // The /metrics request itself is the one in flight.
    expect(metric(m.text, 'ferry_serve_requests_in_flight')).toBe(1);
    expect(logs.find((l) => l.includes(blobLine))).toMatch(/^127\.0\.0\.1 "GET \/v2\/fx\/big\/blobs\/sha256:[a-f0-9]{64} HTTP\/1\.1" 200 \d+ \d+\.\dms "-"$/);
  });
});

describe('hostile and broken clients', () => {
  const send = async (data: string, o: { tls?: boolean; timeoutMs?: number; trickleMs?: number } = {}) => {
    const r = await raw(o.tls ? port : plainPort, data, { ...(o.tls ? { ca } : {}), timeoutMs: o.timeoutMs ?? 3000, ...(o.trickleMs ? { trickleMs: o.trickleMs } : {}) });
    seen.push(r.text);
    return r;
  };
  const reqLine = (target: string, extra = '') => `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${extra}\r\n`;

  it('refuses traversal, encoded traversal, NUL, backslashes and escaping symlinks, and serves nothing outside', async () => {
    const secretHex = b.secretDigest.slice(7);
    const cases: [string, number][] = [
      ['/files/../secret.txt', 400],
      ['/files/%2e%2e/secret.txt', 400],
      ['/files/%2E%2E%2Fsecret.txt', 400],
      ['/files/kubeadm/..%2f..%2f..%2fsecret.txt', 400],
      ['/files/kubeadm/..%5c..%5csecret.txt', 400],
      ['/files/versions.json%00.txt', 400],
      ['/files//etc/passwd', 400],
      ['/files/%2fetc%2fpasswd', 400],
      ['/files/./versions.json', 400],
      ['/files/%E0%A4%A', 400],
      ['/files/evil/v1/linux-amd64/evil', 404],
      ['/files/evil', 404],
      ['/v2/../../secret.txt/manifests/latest', 400],
      ['/v2/%2e%2e/%2e%2e/blobs/sha256:' + secretHex, 400],
      ['/v2/pause/blobs/..%2f..%2f..%2fsecret.txt', 400],
      ['/v2/pause/blobs/sha256:..%2f..%2fsecret', 400],
      ['/v2/pause/manifests/..%2f..%2findex.json', 400],
      ['/v2/pause/blobs/sha256%3A' + 'Z'.repeat(64), 400],
      [`/v2/fx/leak/blobs/${b.secretDigest}`, 404],
      ['/v2/fx/leak/blobs/sha256:' + secretHex.toUpperCase(), 400],
    ];
    for (const [target, status] of cases) {
      const r = await send(reqLine(target));
      expect(r.status, target).toBe(status);
      expect(r.text, target).not.toContain(b.secret);
    }
    // The manifest that names the escaping blob is served; the blob never is.
    expect((await send(reqLine('/v2/fx/leak/manifests/v1'))).status).toBe(200);
    // A symlink that stays inside files/ is fine.
    expect((await send(reqLine('/files/kubeadm/latest/linux-amd64/kubeadm'))).status).toBe(200);
  });

  it('refuses header injection, absolute-form targets, bad methods, garbage and oversized headers', async () => {
    const inj = await send(reqLine('/v2/pause/manifests/3.10%0d%0aX-Evil:%201'));
    expect(inj.status).toBe(404);
    expect(inj.text).toMatch(/"code":"MANIFEST_UNKNOWN"/);
    expect(inj.text).not.toMatch(/^X-Evil/im);
    expect((await send(`GET http://evil.example/files/versions.json HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`)).status).toBe(400);
    expect((await send(`TRACE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)).status).toBe(405);
    expect((await send(`GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n`)).status).toBe(400);
    const garbage = await send('\x00\x01\x02 nonsense\r\n\r\n');
    expect([garbage.status, garbage.closedByServer]).toEqual([400, true]);
    const bigHeader = await send(reqLine('/healthz', `X-Big: ${'a'.repeat(20_000)}\r\n`));
    expect([bigHeader.status, bigHeader.closedByServer]).toEqual([431, true]);
    const longUrl = await send(reqLine(`/v2/${'a/'.repeat(15_000)}manifests/x`));
    expect(longUrl.status).toBe(431);
    // Fifty pipelined requests on one connection all get answers, in order.
    const many = await send(`${'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(49)}${reqLine('/healthz')}`);
    expect(many.text.match(/HTTP\/1\.1 200 OK/g)?.length).toBe(50);
  });

  it('cuts off clients that trickle their headers, in plain HTTP and TLS', async () => {
    for (const useTls of [false, true]) {
      const r = await send('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(200), { tls: useTls, trickleMs: 100, timeoutMs: 8000 });
      expect(r.closedByServer, `tls=${useTls}`).toBe(true);
      // headersTimeout is 1.5 s here; node checks it on a 375 ms tick. Not before it, and the server
      // (not the client's own 8 s timeout) closed: how much later depends on the machine's load.
      expect(r.ms).toBeGreaterThan(1000);
      expect([408, undefined]).toContain(r.status);
    }
    expect(metric(plain.metrics(), 'ferry_serve_client_errors_total', { reason: 'timeout' })).toBeGreaterThanOrEqual(1);
  });

  it('survives clients that vanish mid-blob, and keeps no request in flight', async () => {
    const layer = b.big!.layer;
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve) => {
        const req = https.get(`${srv.url}/v2/fx/big/blobs/${layer.digest}`, { ca, agent: false }, (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', () => resolve());
      });
    }
    const r = await send(reqLine('/v2/fx/big/blobs/' + layer.digest, 'Range: bytes=0-0\r\n'));
    expect(r.status).toBe(206);
    // Each abort is seen, logged and counted out of flight.
    await waitFor(async () => logs.filter((l) => l.includes(`/v2/fx/big/blobs/${layer.digest}`) && l.endsWith(' aborted "-"')).length >= 5, 'five aborted downloads in the log', 60_000);
    expect(metric(srv.metrics(), 'ferry_serve_requests_in_flight')).toBe(0);
  });

  it('still answers /healthz afterwards and never sent the secret', async () => {
    expect((await get('/healthz')).text).toBe('ok\n');
    expect((await send(reqLine('/healthz'))).status).toBe(200);
    expect(seen.length).toBeGreaterThan(50);
    expect(seen.filter((t) => t.includes(b.secret))).toEqual([]);
  });

  it("sent only the distribution spec's error codes in every error body of this file", async () => {
    const codes = new Set<string>();
    for (const t of seen) for (const m of t.matchAll(/"code":"([^"]*)"/g)) codes.add(m[1]!);
    expect(codes.size).toBeGreaterThan(4);
    expect([...codes].filter((c) => !(SPEC_ERROR_CODES as readonly string[]).includes(c))).toEqual([]);
  });
});

describe('graceful shutdown', () => {
  it('stops accepting, lets an in-flight download finish, then closes', async () => {
    const s = await startServer({ bundleDir: b.dir, listen: '127.0.0.1:0' });
    const layer = b.big!.layer;
    const h = createHash('sha256');
    let closedAt = 0;
    const download = new Promise<{ digest: string; at: number }>((resolve, reject) => {
      const req = http.get(`${s.url}/v2/fx/big/blobs/${layer.digest}`, { agent: false }, (res) => {
        res.pause();
        // Start shutting down while the body is still to be read.
        void s.close(10_000).then(() => (closedAt = Date.now()));
        setTimeout(() => {
          res.on('data', (c: Buffer) => h.update(c));
          res.on('end', () => resolve({ digest: `sha256:${h.digest('hex')}`, at: Date.now() }));
          res.resume();
        }, 300);
      });
      req.on('error', reject);
    });
    await new Promise((r) => setTimeout(r, 100));
    // New connections are refused while the download runs.
    const refused = await request(`${s.url}/healthz`).then(() => 'answered', (e: NodeJS.ErrnoException) => e.code);
    expect(refused).toBe('ECONNREFUSED');
    const d = await download;
    expect(d.digest).toBe(layer.digest);
    await new Promise((r) => setTimeout(r, 200));
    expect(closedAt).toBeGreaterThan(0);
    expect(closedAt).toBeGreaterThanOrEqual(d.at - 50);
  });

  it('cuts a client that stops reading once the shutdown timeout passes', async () => {
    const logsHere: string[] = [];
    const s = await startServer({ bundleDir: b.dir, listen: '127.0.0.1:0', log: (l) => logsHere.push(l) });
    const layer = b.big!.layer;
    let gotHeaders = false;
    const req = http.get(`${s.url}/v2/fx/big/blobs/${layer.digest}`, { agent: false }, (res) => {
      gotHeaders = true;
      res.pause();
    });
    req.on('error', () => {});
    await new Promise((r) => setTimeout(r, 300));
    expect(gotHeaders).toBe(true);
    const t0 = Date.now();
    await s.close(500);
    const took = Date.now() - t0;
    // Not before the 500 ms it was given; how much later depends on the machine's load.
    expect(took).toBeGreaterThanOrEqual(450);
    expect(logsHere.some((l) => /shutdown: cutting 1 request/.test(l))).toBe(true);
    req.destroy();
  });
});

describe('listening', () => {
  it('refuses a taken port, a non-bundle, a bad address and a mismatched TLS pair, with codes and hints', async () => {
    const p = await freePort();
    const s = await startServer({ bundleDir: b.dir, listen: `127.0.0.1:${p}` });
    await expect(startServer({ bundleDir: b.dir, listen: `127.0.0.1:${p}` })).rejects.toMatchObject({ code: 'SERVE_LISTEN', hint: expect.stringContaining('port') });
    await s.close();
    await expect(startServer({ bundleDir: work, listen: '127.0.0.1:0' })).rejects.toMatchObject({ code: 'SERVE_BUNDLE' });
    await expect(startServer({ bundleDir: b.dir, listen: 'nonsense' })).rejects.toMatchObject({ code: 'SERVE_LISTEN' });
    // A key that does not belong to the certificate is refused before anything listens.
    await expect(startServer({ bundleDir: b.dir, listen: '127.0.0.1:0', tls: { cert: caFile, key: serverKey } })).rejects.toMatchObject({ code: 'PKI_INVALID', message: expect.stringContaining('key values mismatch') });
    await expect(startServer({ bundleDir: b.dir, listen: '127.0.0.1:0', tls: { cert: path.join(work, 'none.crt'), key: serverKey } })).rejects.toMatchObject({ code: 'PKI_INVALID' });
  });
});
