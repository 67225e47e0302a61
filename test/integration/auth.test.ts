import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CredentialStore } from '../../src/oci/auth.js';
import { RegistryClient } from '../../src/oci/client.js';
import { resolveAll } from '../../src/spec/lock.js';
import { loadSpec } from '../../src/spec/spec.js';
import { buildFixtureSet, type FixtureSet } from '../../fixtures/images.js';
import { ferry } from '../helpers/cli.js';
import { pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { startFaultProxy, type FaultProxy } from '../helpers/proxy.js';
import { installTokenStandIn } from '../helpers/token-standin.js';
import { writeSpec } from '../helpers/spec.js';

const fast = { retries: 2, backoffMs: 5, maxBackoffMs: 10 };
let work: string;
let fx: FixtureSet;
let secured: RegistryPeer;
let open: RegistryPeer;
let proxy: FaultProxy;

beforeAll(async () => {
  work = await tmpdir();
  fx = await buildFixtureSet(path.join(work, 'fx'), 0.1);
  secured = await startRegistry({ htpasswd: { user: 'alice', pass: 's3cret' } });
  open = await startRegistry();
  await pushFixtures(fx, open.host, 'fx');
  proxy = await startFaultProxy(open.host);
});
afterAll(async () => {
  await proxy?.close();
  await secured?.stop();
  await open?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('--creds-file against the htpasswd registry', () => {
  it('pushes with USER:PASSWORD from a 0600 file, then locks and pulls with a docker config.json, the password on no command line', async () => {
    const dir = path.join(work, 'creds-file');
    await fs.mkdir(dir, { recursive: true });
    const plain = path.join(dir, 'registry.creds');
    await fs.writeFile(plain, 'alice:s3cret\n', { mode: 0o600 });
    const noCreds = { DOCKER_CONFIG: path.join(dir, 'no-docker-config') };
    const push = await ferry(['images', 'push', '--store', fx.store.dir, '--to', `${secured.host}/cf`, '--creds-file', `${secured.host}=${plain}`, '--json'], { env: noCreds });
    expect(push.code, push.stderr).toBe(0);
    expect((JSON.parse(push.stdout) as { images: { target: string }[] }).images.map((i) => i.target)).toContain(`${secured.host}/cf/multi:v1`);

    const cfg = path.join(dir, 'config.json');
    await fs.writeFile(cfg, JSON.stringify({ auths: { [`http://${secured.host}`]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }), { mode: 0o600 });
    const spec = await writeSpec(path.join(dir, 'spec'), [`${secured.host}/cf/multi:v1`]);
    const lock = await ferry(['lock', spec, '--insecure-registry', secured.host, '--creds-file', cfg], { env: noCreds });
    expect(lock.code, lock.stderr).toBe(0);
    const pull = await ferry(['images', 'pull', spec, '--out', path.join(dir, 'store'), '--insecure-registry', secured.host, '--creds-file', cfg, '--json'], { env: noCreds });
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.stdout).toContain(fx.images['multi:v1']!.digest);

    // Without the file the registry refuses: the file is what authenticated.
    const anon = await ferry(['lock', spec, '--insecure-registry', secured.host, '--check'], { env: noCreds });
    expect(anon.stderr).toMatch(/REGISTRY_AUTH/);
  });

  it('refuses a file other users may read, as ssh refuses such a key, and says how to fix it', async () => {
    const loose = path.join(work, 'open.creds');
    await fs.writeFile(loose, 'alice:s3cret\n', { mode: 0o644 });
    await fs.chmod(loose, 0o644);
    const r = await ferry(['images', 'push', '--store', fx.store.dir, '--to', `${secured.host}/cf2`, '--creds-file', loose]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`error[CREDS_INVALID]: --creds-file ${loose} is open to other users (mode 0644): it holds a password`);
    expect(r.stderr).toContain(`hint: Make it readable by you alone: chmod 600 ${loose}`);
    expect(r.stderr).not.toContain('s3cret');
  });

  it('refuses a file that holds no USER:PASSWORD, without echoing it, and says the --creds help warns of the process list', async () => {
    const bad = path.join(work, 'bad.creds');
    await fs.writeFile(bad, 's3cret-without-user\n', { mode: 0o600 });
    const r = await ferry(['images', 'push', '--store', fx.store.dir, '--to', `${secured.host}/cf3`, '--creds-file', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[CREDS_INVALID\]: --creds-file \S+ does not hold USER:PASSWORD on one line/);
    expect(r.stderr).not.toContain('s3cret');
    const help = (await ferry(['images', 'push', '--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).toContain('Other users can see it in the process list: prefer --creds-file');
  });
});

describe('basic auth against the htpasswd registry', () => {
  it('pushes and resolves with --creds for that registry', async () => {
    const creds = new CredentialStore(CredentialStore.parseCreds([`${secured.host}=alice:s3cret`]), '/nonexistent');
    const client = new RegistryClient({ ...fast, credentials: creds });
    const { Pusher } = await import('../../src/oci/copy.js');
    await new Pusher({ client, store: fx.store }).push(fx.images['multi:v1']!, { repo: { registry: secured.host, repository: 'team/multi' }, tag: 'v1' });
    const head = await client.headManifest({ registry: secured.host, repository: 'team/multi' }, 'v1');
    expect(head.digest).toBe(fx.images['multi:v1']!.digest);
  });

  it('reads credentials from $DOCKER_CONFIG/config.json', async () => {
    const cfgDir = path.join(work, 'dockercfg');
    await fs.mkdir(cfgDir, { recursive: true });
    await fs.writeFile(path.join(cfgDir, 'config.json'), JSON.stringify({ auths: { [`http://${secured.host}`]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
    const creds = new CredentialStore(new Map(), path.join(cfgDir, 'config.json'));
    const client = new RegistryClient({ ...fast, credentials: creds });
    const m = await client.getManifest({ registry: secured.host, repository: 'team/multi' }, 'v1');
    expect(m.digest).toBe(fx.images['multi:v1']!.digest);
  });

  it('says that credentials are missing, and how to give them', async () => {
    const client = new RegistryClient({ ...fast, credentials: new CredentialStore(new Map(), '/nonexistent') });
    await expect(client.getManifest({ registry: secured.host, repository: 'team/multi' }, 'v1')).rejects.toMatchObject({
      code: 'REGISTRY_AUTH',
      hint: expect.stringContaining(`--creds ${secured.host}=USER:PASSWORD`),
    });
  });

  it('says that credentials were rejected, without echoing the password', async () => {
    const client = new RegistryClient({ ...fast, credentials: new CredentialStore(CredentialStore.parseCreds(['alice:wrong-password']), '/nonexistent') });
    const err = (await client.getManifest({ registry: secured.host, repository: 'team/multi' }, 'v1').then(
      () => expect.unreachable(),
      (e: unknown) => e,
    )) as Error & { code: string; hint: string };
    expect(err.code).toBe('REGISTRY_AUTH');
    expect(err.hint).toMatch(/rejected/);
    expect(`${err.message} ${err.hint}`).not.toContain('wrong-password');
  });

  it('refuses a malformed --creds value with a usage error', () => {
    expect(() => CredentialStore.parseCreds(['justauser'])).toThrowError(expect.objectContaining({ code: 'CREDS_INVALID' }));
  });
});

describe('bearer tokens (token service stand-in in front of the real registry)', () => {
  it('gets a token from the challenge, caches it per scope, and resolves a lock', async () => {
    const ts = installTokenStandIn(proxy, { user: 'bob', pass: 'hunter2' });
    const dir = await tmpdir();
    const spec = await loadSpec(await writeSpec(dir, [`${proxy.host}/fx/multi:v1`, `${proxy.host}/fx/dockerlist:v1`]));
    const client = new RegistryClient({ ...fast, credentials: new CredentialStore(CredentialStore.parseCreds([`${proxy.host}=bob:hunter2`]), '/nonexistent') });
    const lock = await resolveAll(client, spec);
    expect(lock.images.map((i) => i.digest).sort()).toEqual([fx.images['multi:v1']!.digest, fx.images['dockerlist:v1']!.digest].sort());
    // One token per repository scope, reused for every request in that scope.
    expect(ts.tokenRequests.map((t) => t.scope.join(' ')).sort()).toEqual(['repository:fx/dockerlist:pull', 'repository:fx/multi:pull']);
    expect(ts.tokenRequests.every((t) => t.user === 'bob')).toBe(true);
    await resolveAll(client, spec);
    expect(ts.tokenRequests).toHaveLength(2);
    proxy.gate = undefined;
  });

  it('reports a token service that refuses the credentials', async () => {
    installTokenStandIn(proxy, { user: 'bob', pass: 'hunter2' });
    const client = new RegistryClient({ ...fast, credentials: new CredentialStore(CredentialStore.parseCreds(['bob:nope']), '/nonexistent') });
    await expect(client.getManifest({ registry: proxy.host, repository: 'fx/multi' }, 'v1')).rejects.toMatchObject({ code: 'REGISTRY_AUTH', message: expect.stringContaining('refused the credentials') });
    proxy.gate = undefined;
  });
});
