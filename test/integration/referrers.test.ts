import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundledReferrers } from '../../src/bundle/images.js';
import { RegistryClient } from '../../src/oci/client.js';
import { Pusher } from '../../src/oci/copy.js';
import { Layout, REF_NAME } from '../../src/oci/layout.js';
import { MediaType, type Descriptor } from '../../src/oci/media.js';
import { SPEC_ERROR_CODES } from '../../src/site/respond.js';
import { startServer, type SiteServer } from '../../src/site/server.js';
import { resolveAll, writeLock } from '../../src/spec/lock.js';
import { loadSpec } from '../../src/spec/spec.js';
import { buildFixtureSet, type FixtureSet } from '../../fixtures/images.js';
import { ferry } from '../helpers/cli.js';
import { pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { request } from '../helpers/site.js';
import { writeSpec } from '../helpers/spec.js';

/*
 * Referrers (signatures, SBOMs) against the real distribution registry, which has no referrers API
 * (2.8): artifacts are pushed as oras and cosign push them there, with the `sha256-<hex>` referrers
 * tag kept beside. `ferry images pull --with-referrers` brings them into a store, a bundle carries
 * them, and `ferry serve` answers the referrers API with what the registry's tag lists.
 */

let reg: RegistryPeer;
let fx: FixtureSet;
let work: string;
let srv: SiteServer | undefined;
const fast = { retries: 3, backoffMs: 5, maxBackoffMs: 20 };
const EMPTY = { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2 };
const SBOM = 'application/spdx+json';
const SIG = 'application/vnd.dev.cosign.artifact.sig.v1+json';
const INTOTO = 'application/vnd.in-toto+json';

let subject: Descriptor;
let child: Descriptor;
/** subject digest → the referrers tag's entries, as the registry serves them */
const tagged = new Map<string, Descriptor[]>();
const artifacts: Record<string, Descriptor> = {};
let storeDir: string;

/** An artifact manifest in the oras/cosign shape: empty config, one layer, a subject. */
async function artifact(store: Layout, artifactType: string, content: string, subj: Descriptor): Promise<Descriptor> {
  await store.putBytes(Buffer.from('{}'));
  const layer = { ...(await store.putBytes(Buffer.from(content))), mediaType: 'application/octet-stream' };
  const annotations = { 'org.opencontainers.image.created': '2026-01-01T00:00:00Z', 'test.kind': artifactType };
  const m = { schemaVersion: 2, mediaType: MediaType.ociManifest, artifactType, config: EMPTY, layers: [layer], subject: { mediaType: subj.mediaType, digest: subj.digest, size: subj.size }, annotations };
  const d = await store.putBytes(Buffer.from(JSON.stringify(m)));
  return { mediaType: MediaType.ociManifest, digest: d.digest, size: d.size, artifactType, annotations };
}

beforeAll(async () => {
  work = await tmpdir('ferry-referrers-');
  reg = await startRegistry();
  fx = await buildFixtureSet(path.join(work, 'fixtures'), 0.05);
  await pushFixtures(fx, reg.host, 'fx');
  const client = new RegistryClient(fast);
  const repo = { registry: reg.host, repository: 'fx/multi' };
  subject = fx.images['multi:v1']!;
  const idx = JSON.parse((await fx.store.readBlob(subject.digest)).toString('utf8')) as { manifests: Descriptor[] };
  child = idx.manifests.find((m) => m.platform?.architecture === 'amd64')!;
  artifacts.sbom = await artifact(fx.store, SBOM, '{"spdxVersion":"SPDX-2.3"}', subject);
  artifacts.sig = await artifact(fx.store, SIG, 'signature bytes', subject);
  artifacts.childAttestation = await artifact(fx.store, INTOTO, '{"_type":"https://in-toto.io/Statement/v1"}', child);
  // A signature of the SBOM: a referrer of a referrer.
  artifacts.sbomSig = await artifact(fx.store, SIG, 'signature of the sbom', artifacts.sbom);
  const pusher = new Pusher({ client, store: fx.store });
  const by = new Map<string, Descriptor[]>();
  for (const [name, a] of Object.entries(artifacts)) {
    await pusher.push(a, { repo });
    const subj = name === 'sbom' || name === 'sig' ? subject : name === 'childAttestation' ? child : artifacts.sbom!;
    by.set(subj.digest, [...(by.get(subj.digest) ?? []), a]);
  }
  // The referrers tag schema, as clients keep it on a registry without the API.
  for (const [d, list] of by) {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: list }));
    await client.putManifest(repo, d.replace(':', '-'), body, MediaType.ociIndex);
    tagged.set(d, list);
  }
}, 180_000);

afterAll(async () => {
  await srv?.close();
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

const key = (d: Descriptor) => ({ mediaType: d.mediaType, digest: d.digest, size: d.size, artifactType: d.artifactType, annotations: d.annotations });
const sorted = (ds: Descriptor[]) => ds.map(key).sort((a, b) => (a.digest < b.digest ? -1 : 1));

describe('referrers travel with their images', () => {
  it('reads referrers from the referrers tag where the registry has no referrers API', async () => {
    // The premise: distribution 2.8 answers 404 on the API's path.
    const api = await request(`http://${reg.host}/v2/fx/multi/referrers/${subject.digest}`);
    expect(api.status).toBe(404);
    const client = new RegistryClient(fast);
    const r = await client.referrers({ registry: reg.host, repository: 'fx/multi' }, subject.digest);
    expect(r.how).toBe('tag');
    expect(sorted(r.manifests)).toEqual(sorted([artifacts.sbom!, artifacts.sig!]));
    const only = await client.referrers({ registry: reg.host, repository: 'fx/multi' }, subject.digest, SBOM);
    expect(only.manifests.map((d) => d.digest)).toEqual([artifacts.sbom!.digest]);
    const none = await client.referrers({ registry: reg.host, repository: 'fx/single' }, fx.images['single:v1']!.digest);
    expect([none.how, none.manifests]).toEqual(['none', []]);
  });

  it('ferry images pull --with-referrers stores every referrer, of the index, its platforms and other referrers', async () => {
    const dir = path.join(work, 'pull');
    const specFile = await writeSpec(dir, [`${reg.host}/fx/multi:v1`, { ref: `${reg.host}/fx/single:v1`, platforms: ['linux/amd64'] }]);
    const lockFile = path.join(dir, 'images.lock');
    await writeLock(lockFile, await resolveAll(new RegistryClient(fast), await loadSpec(specFile)));
    storeDir = path.join(dir, 'store');
    const env = { FERRY_CACHE_DIR: path.join(dir, 'cache'), DOCKER_CONFIG: path.join(dir, 'no-docker') };
    const r = await ferry(['images', 'pull', specFile, '--out', storeDir, '--with-referrers', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { images: { name: string; referrers?: { digest: string }[] }[] };
    const multi = out.images.find((i) => i.name.endsWith('fx/multi:v1'))!;
    expect(multi.referrers!.map((x) => x.digest).sort()).toEqual(Object.values(artifacts).map((a) => a.digest).sort());
    expect(out.images.find((i) => i.name.endsWith('fx/single:v1'))!.referrers).toEqual([]);
    const idx = JSON.parse(await fs.readFile(path.join(storeDir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    const names = idx.manifests.map((d) => d.annotations?.[REF_NAME]);
    for (const a of Object.values(artifacts)) expect(names).toContain(`${reg.host}/fx/multi@${a.digest}`);
    // Without the flag, nothing but the images.
    const plainStore = path.join(dir, 'plain');
    expect((await ferry(['images', 'pull', specFile, '--out', plainStore, '--json'], { env })).code).toBe(0);
    const plain = JSON.parse(await fs.readFile(path.join(plainStore, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    expect(plain.manifests.map((d) => d.annotations?.[REF_NAME]).sort()).toEqual([`${reg.host}/fx/multi:v1`, `${reg.host}/fx/single:v1`]);
  });

  it('a bundle carries the referrers of the images and platforms it carries, and no others', async () => {
    const store = await Layout.open(storeDir);
    const name = `${reg.host}/fx/multi:v1`;
    const all = await bundledReferrers(store, [{ name, desc: subject }]);
    expect(all.map((r) => r.name).sort()).toEqual(Object.values(artifacts).map((a) => `${reg.host}/fx/multi@${a.digest}`).sort());
    expect(all.find((r) => r.desc.digest === artifacts.sbom!.digest)!.desc.artifactType).toBe(SBOM);
    // Narrowed to arm64, the amd64 manifest's attestation stays behind.
    const arm = (JSON.parse((await store.readBlob(subject.digest)).toString('utf8')) as { manifests: Descriptor[] }).manifests.find((m) => m.platform?.architecture === 'arm64')!;
    const narrowed = await bundledReferrers(store, [{ name, desc: subject, only: new Set([arm.digest]) }]);
    expect(narrowed.map((r) => r.desc.digest).sort()).toEqual([artifacts.sbom!.digest, artifacts.sig!.digest, artifacts.sbomSig!.digest].sort());
    // An image without referrers brings none.
    expect(await bundledReferrers(store, [{ name: `${reg.host}/fx/single:v1`, desc: fx.images['single:v1']! }])).toEqual([]);
  });

  it('ferry serve answers the referrers API as the registry lists them, with artifactType filtering', async () => {
    const bundle = path.join(work, 'site');
    await fs.mkdir(bundle);
    await fs.symlink(storeDir, path.join(bundle, 'images'));
    srv = await startServer({ bundleDir: bundle, listen: '127.0.0.1:0', log: () => {} });
    const base = `${srv.url}/v2/fx/multi`;
    for (const [d, list] of tagged) {
      const r = await request(`${base}/referrers/${d}`);
      expect([r.status, r.headers['content-type']]).toEqual([200, MediaType.ociIndex]);
      const body = r.json<{ schemaVersion: number; mediaType: string; manifests: Descriptor[] }>();
      expect([body.schemaVersion, body.mediaType]).toEqual([2, MediaType.ociIndex]);
      // The registry's tag index and ferry serve list the same descriptors.
      const fromRegistry = (await request(`http://${reg.host}/v2/fx/multi/manifests/${d.replace(':', '-')}`, { headers: { Accept: MediaType.ociIndex } })).json<{ manifests: Descriptor[] }>().manifests;
      expect(sorted(body.manifests)).toEqual(sorted(fromRegistry));
      expect(sorted(body.manifests)).toEqual(sorted(list));
      expect(r.headers['oci-filters-applied']).toBeUndefined();
    }
    const filtered = await request(`${base}/referrers/${subject.digest}?artifactType=${encodeURIComponent(SBOM)}`);
    expect(filtered.headers['oci-filters-applied']).toBe('artifactType');
    expect(filtered.json<{ manifests: Descriptor[] }>().manifests.map((d) => d.digest)).toEqual([artifacts.sbom!.digest]);
    // ferry's own client reads the API there, filter applied by the server.
    const client = new RegistryClient(fast);
    const viaApi = await client.referrers({ registry: `${srv.address.host}:${srv.address.port}`, repository: 'fx/multi' }, subject.digest, SIG);
    expect([viaApi.how, viaApi.manifests.map((d) => d.digest)]).toEqual(['api', [artifacts.sig!.digest]]);
    // The referrers themselves are served beside their subject.
    const sbom = await request(`${base}/manifests/${artifacts.sbom!.digest}`);
    expect([sbom.status, sbom.headers['docker-content-digest']]).toEqual([200, artifacts.sbom!.digest]);
  });

  it('answers a digest it does not hold: an empty index for referrers, 404 for a well-formed sha512, 400 only when malformed', async () => {
    const base = `${srv!.url}/v2/fx/multi`;
    const nothing = await request(`${base}/referrers/sha256:${'0'.repeat(64)}`);
    expect([nothing.status, nothing.json<{ manifests: unknown[] }>().manifests]).toEqual([200, []]);
    const sha512 = `sha512:${'ab'.repeat(64)}`;
    expect((await request(`${base}/referrers/${sha512}`)).status).toBe(200);
    for (const [p, status, code] of [
      [`${base}/manifests/${sha512}`, 404, 'MANIFEST_UNKNOWN'],
      [`${base}/blobs/${sha512}`, 404, 'BLOB_UNKNOWN'],
      [`${base}/blobs/sha512:abc`, 400, 'DIGEST_INVALID'],
      [`${base}/referrers/sha256:abc`, 400, 'DIGEST_INVALID'],
      [`${srv!.url}/v2/fx/nope/referrers/${subject.digest}`, 404, 'NAME_UNKNOWN'],
    ] as const) {
      const r = await request(p);
      expect([r.status, r.json<{ errors: { code: string }[] }>().errors[0]!.code], p).toEqual([status, code]);
      expect(SPEC_ERROR_CODES as readonly string[]).toContain(code);
    }
  });
});
