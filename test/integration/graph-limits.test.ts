import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/oci/client.js';
import { MediaType, type Descriptor } from '../../src/oci/media.js';
import { sha256 } from '../../src/util/digest.js';
import { ferry, FERRY } from '../helpers/cli.js';
import { startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { startFaultProxy, type FaultProxy } from '../helpers/proxy.js';
import { writeSpec } from '../helpers/spec.js';

/*
 * Issue 10 item 7: a registry that serves a manifest graph built to explode. Every path that reads
 * one (lock, images pull, bundle build, images push) reads each digest once, caps the depth and
 * the number of manifests, and ends with a clear error; requests and memory stay bounded. Item 14:
 * a manifest over 4 MiB is a registry problem (exit 4), not a bug.
 */
let work: string;
let reg: RegistryPeer;
let proxy: FaultProxy;
let client: RegistryClient;
const amd64 = { os: 'linux', architecture: 'amd64' };

/** Pushes raw bytes the way any client would, children first; no ferry walk is involved. */
async function putBlob(repo: string, bytes: Buffer): Promise<Descriptor> {
  const digest = sha256(bytes);
  await client.pushBlob({ registry: reg.host, repository: repo }, bytes.length, digest, (s, e) => Readable.from([bytes.subarray(s, e + 1)]));
  return { mediaType: 'application/octet-stream', digest, size: bytes.length };
}
async function putManifest(repo: string, doc: object, mediaType: string, tag?: string): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, ...doc }));
  const digest = sha256(bytes);
  await client.putManifest({ registry: reg.host, repository: repo }, tag ?? digest, bytes, mediaType);
  return { mediaType, digest, size: bytes.length, platform: amd64 };
}
/** One amd64 image (config and a layer); `n` makes its manifest distinct. */
async function image(repo: string, n = 0): Promise<Descriptor> {
  const config = await putBlob(repo, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })));
  const layer = await putBlob(repo, Buffer.from('a layer, shared by every manifest'));
  return putManifest(repo, { config: { ...config, mediaType: MediaType.ociConfig }, layers: [{ ...layer, mediaType: MediaType.ociLayerGzip }], annotations: { n: String(n) } }, MediaType.ociManifest);
}
const index = (repo: string, manifests: Descriptor[], tag?: string, extra: object = {}) => putManifest(repo, { manifests, ...extra }, MediaType.ociIndex, tag);

beforeAll(async () => {
  work = await tmpdir('ferry-graph-');
  reg = await startRegistry();
  proxy = await startFaultProxy(reg.host);
  client = new RegistryClient({ retries: 2, backoffMs: 5 });

  // fan-out 30, depth 5, every level naming the same child: a tree of 30^5 paths, 8 objects.
  const m = await image('hostile/fanout');
  let level = await index('hostile/fanout', Array(30).fill(m));
  for (let d = 0; d < 3; d++) level = await index('hostile/fanout', Array(30).fill(level));
  await index('hostile/fanout', [m, ...Array(29).fill(level)], 'v1');

  // Indexes nested 12 deep, under an honest-looking top.
  const deepM = await image('hostile/deep');
  let chain = await index('hostile/deep', [deepM]);
  for (let d = 0; d < 11; d++) chain = await index('hostile/deep', [chain], undefined, { annotations: { d: String(d) } });
  await index('hostile/deep', [deepM, chain], 'v1');

  // 600 distinct manifests behind one nested index.
  const wideKids: Descriptor[] = [];
  for (let i = 0; i < 600; i++) wideKids.push(await image('hostile/wide', i + 1));
  await index('hostile/wide', [wideKids[0]!, await index('hostile/wide', wideKids)], 'v1');

  // Manifests over 4 MiB, which docker-registry refuses to store: the proxy serves them, at the
  // top of one image and as the child of an honest-looking index of another.
  const small = await image('hostile/bigchild');
  const big = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [small], annotations: { pad: 'x'.repeat(5 << 20) } }));
  const bigDesc = { mediaType: MediaType.ociIndex, digest: sha256(big), size: big.length, platform: amd64 };
  const top = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [small, bigDesc] }));
  const serve = (res: import('node:http').ServerResponse, method: string, bytes: Buffer) => {
    res.writeHead(200, { 'content-type': MediaType.ociIndex, 'content-length': bytes.length, 'docker-content-digest': sha256(bytes) });
    res.end(method === 'HEAD' ? undefined : bytes);
    return true;
  };
  proxy.gate = (req, res) => {
    const u = req.url ?? '';
    if (u === '/v2/hostile/big/manifests/v1' || u === `/v2/hostile/bigchild/manifests/${bigDesc.digest}`) return serve(res, req.method ?? 'GET', big);
    if (u === '/v2/hostile/bigchild/manifests/v1' || u === `/v2/hostile/bigchild/manifests/${sha256(top)}`) return serve(res, req.method ?? 'GET', top);
    return false;
  };
}, 300_000);

afterAll(async () => {
  await proxy?.close();
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

/** Runs the CLI under /usr/bin/time: its result and its peak RSS in MB. */
function timedFerry(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stderr: string; rssMb: number }> {
  return new Promise((resolve) => {
    const p = spawn('/usr/bin/time', ['-f', 'maxrss=%M', process.execPath, FERRY, ...args], { env: { ...process.env, ...env } });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code: code ?? 1, stderr, rssMb: Number(/maxrss=(\d+)/.exec(stderr)?.[1] ?? 0) / 1024 }));
  });
}

/** A spec and lock for one image through the counting proxy. */
async function project(name: string) {
  const dir = await tmpdir(`ferry-graph-${name}-`);
  const spec = await writeSpec(dir, [{ ref: `${proxy.host}/hostile/${name}:v1`, platforms: ['linux/amd64'] }], { name, platforms: ['linux/amd64'] });
  const env = { FERRY_CACHE_DIR: path.join(dir, 'cache') };
  proxy.requests.length = 0;
  const lock = await ferry(['lock', spec], { env });
  const lockRequests = proxy.requests.length;
  return { dir, spec, env, lock, lockRequests };
}

const manifestGets = () => proxy.requests.filter((r) => r.method === 'GET' && r.url.includes('/manifests/')).length;

describe('manifest graphs are walked once per digest, capped, and refused clearly', () => {
  it('a fan-out 30, depth 5 graph of shared children costs one request per object and little memory', async () => {
    const p = await project('fanout');
    expect(p.lock.code, p.lock.stderr).toBe(0);
    expect(p.lockRequests).toBeLessThan(10);
    proxy.requests.length = 0;
    const r = await timedFerry(['images', 'pull', p.spec, '--out', path.join(p.dir, 'store')], p.env);
    expect(r.code, r.stderr).toBe(0);
    // 5 indexes and 1 image manifest, each fetched once; no tree of 30^5 paths.
    expect(manifestGets()).toBeLessThanOrEqual(6);
    expect(proxy.requests.length).toBeLessThan(20);
    expect(r.rssMb).toBeLessThan(250);
  });

  it.each([
    ['nests indexes 12 deep', 'deep', /nests indexes more than 8 deep/, 12],
    ['names 600 distinct manifests', 'wide', /names more than 512 distinct manifests/, 520],
  ])('a graph that %s is refused by images pull and bundle build: MANIFEST_GRAPH_TOO_LARGE, exit 4, bounded requests', async (_what, name, message, maxGets) => {
    const p = await project(name);
    expect(p.lock.code, p.lock.stderr).toBe(0);
    // The lock reads the top only.
    expect(p.lockRequests).toBeLessThan(10);
    expect((await ferry(['key', 'generate', '--out', path.join(p.dir, 'keys'), '-q'])).code).toBe(0);
    for (const args of [
      ['images', 'pull', p.spec, '--out', path.join(p.dir, 'store')],
      ['bundle', 'build', p.spec, '--key', path.join(p.dir, 'keys', 'ferry.key'), '--out', path.join(p.dir, 'x.ferry.tar')],
    ]) {
      proxy.requests.length = 0;
      const r = await timedFerry(args, p.env);
      expect(r.stderr).toContain('error[MANIFEST_GRAPH_TOO_LARGE]');
      expect(r.stderr).toMatch(message);
      expect(r.code).toBe(4);
      expect(manifestGets()).toBeLessThanOrEqual(maxGets);
      expect(r.rssMb).toBeLessThan(250);
    }
  });

  it('a store holding such a graph is refused by images push, not walked without end', async () => {
    // A layout made by hand: the same 12-deep chain, read from disk.
    const { Layout } = await import('../../src/oci/layout.js');
    const store = await Layout.open(path.join(work, 'hand-store'));
    const put = (doc: object, mediaType: string) => store.putBytes(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, ...doc })), undefined).then((d) => ({ ...d, mediaType }));
    const cfg = await store.putBytes(Buffer.from('{}'));
    let d = await put({ config: { ...cfg, mediaType: MediaType.ociConfig }, layers: [] }, MediaType.ociManifest);
    for (let i = 0; i < 12; i++) d = await put({ manifests: [d] }, MediaType.ociIndex);
    await store.addRefs([{ name: `${reg.host}/deep/chain:v1`, descriptor: d }]);
    const r = await ferry(['images', 'push', '--store', store.dir, '--to', `${reg.host}/copied`]);
    expect(r.stderr).toContain('error[STORE_INVALID]');
    expect(r.stderr).toMatch(/nests indexes more than 8 deep/);
    expect(r.code).toBe(6);
  });
});

describe('a manifest over 4 MiB is a registry problem (exit 4), not a bug', () => {
  it.each([
    ['ferry lock, at the top', 'big', 'lock'],
    ['ferry images pull, as a child', 'bigchild', 'pull'],
  ])('%s: MANIFEST_TOO_LARGE', async (_what, name, step) => {
    const p = await project(name);
    const r = step === 'lock' ? p.lock : await ferry(['images', 'pull', p.spec, '--out', path.join(p.dir, 'store')], { env: p.env });
    expect(r.stderr).toContain('error[MANIFEST_TOO_LARGE]');
    expect(r.stderr).toMatch(/larger than 4 MiB/);
    expect(r.code).toBe(4);
  });
});
