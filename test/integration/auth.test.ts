import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CredentialStore } from '../../src/oci/auth.js';
import { RegistryClient } from '../../src/oci/client.js';
import { resolveAll } from '../../src/spec/lock.js';
import { loadSpec } from '../../src/spec/spec.js';
import { buildFixtureSet, type FixtureSet } from '../../fixtures/images.js';
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
