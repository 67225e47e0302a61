import { spawn } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tarOf } from '../../fixtures/hostile.js';
import { checksumsText, entryMode, manifestBytes, TABLE, versionsJson, type BundleFile, type BundleManifest } from '../../src/bundle/format.js';
import { SiteStore } from '../../src/bundle/store.js';
import { Host } from '../../src/install/host.js';
import { addAndUse } from '../../src/install/site-store.js';
import { BUNDLE_DIR, STORE_DIR } from '../../src/install/paths.js';
import { startServer, type SiteServer } from '../../src/site/server.js';
import { fingerprint, signBytes } from '../../src/sign/keys.js';
import { sha256Hex } from '../../src/util/digest.js';
import { ferry } from '../helpers/cli.js';
import { skopeoInspect, tmpdir } from '../helpers/peers.js';

/**
 * Issue 18 item 4: the site store holds several bundles, each registered by its id, content
 * stored once; the real CLI adds, lists and prunes; `ferry serve` of the store serves the union to
 * skopeo.
 */

const site = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
let work: string;
let pub: string;
const pem = (k: KeyObject) => (k.type === 'public' ? k : createPublicKey(k)).export({ type: 'spki', format: 'pem' }) as string;

const blob = (data: Buffer | string) => {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return { hex: sha256Hex(b), data: b, size: b.length };
};

/** One OCI image: its config, its layers and its manifest, each a blob. */
function image(tag: string, layers: ReturnType<typeof blob>[]) {
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${l.hex}`) }, config: { Labels: { tag } } }));
  const manifest = blob(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${config.hex}`, size: config.size },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${l.hex}`, size: l.size })),
    }),
  );
  return { blobs: [config, ...layers, manifest], manifest };
}

interface Spec {
  version: string;
  created: string;
  kubernetes?: string;
  images: { ref: string; img: ReturnType<typeof image> }[];
  files: { name: string; version: string; data: Buffer }[];
}

/** A signed bundle as build writes it: the table, then every entry in path order. */
async function bundleFile(file: string, s: Spec, signWith: KeyObject = site.privateKey): Promise<string> {
  const entries = new Map<string, Buffer>();
  for (const { img } of s.images) for (const b of img.blobs) entries.set(`images/blobs/sha256/${b.hex}`, b.data);
  const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: s.images.map(({ ref, img }) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${img.manifest.hex}`, size: img.manifest.size, annotations: { 'org.opencontainers.image.ref.name': ref, 'io.containerd.image.name': ref } })) };
  entries.set('images/index.json', Buffer.from(JSON.stringify(index)));
  entries.set('images/oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
  const files: BundleFile[] = s.files.map((f) => ({ name: f.name, version: f.version, platform: 'linux/amd64', path: `files/${f.name}/${f.version}/linux-amd64/${f.name}`, sha256: sha256Hex(f.data), size: f.data.length, archive: false, url: `https://example.test/${f.name}` }));
  for (const [i, f] of s.files.entries()) entries.set(files[i]!.path, f.data);
  entries.set('files/versions.json', versionsJson(files));
  entries.set('install.sh', Buffer.from(`#!/bin/sh\necho ${s.version}\n`));
  entries.set('ferry/ferry.mjs', Buffer.from(`// ferry of ${s.version}\n`));
  const content = [...entries].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const signer = createPublicKey(signWith);
  const manifest: BundleManifest = {
    formatVersion: 1,
    name: 'site',
    version: s.version,
    created: s.created,
    ferryVersion: '0.1.0',
    platforms: ['linux/amd64'],
    ...(s.kubernetes ? { kubernetes: { version: s.kubernetes } } : {}),
    images: s.images.map(({ ref, img }) => ({ ref, digest: `sha256:${img.manifest.hex}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', platforms: ['linux/amd64'] })),
    charts: [],
    files,
    runtime: [],
    signer: { fingerprint: fingerprint(signer), publicKey: pem(signer) },
    contentSize: content.reduce((n, [, d]) => n + d.length, 0),
    entries: content.length + TABLE.length,
  };
  const json = manifestBytes(manifest);
  const sums = checksumsText([{ path: 'bundle.json', sha256: sha256Hex(json) }, ...content.map(([p, d]) => ({ path: p, sha256: sha256Hex(d) }))]);
  const sig = Buffer.from(`${signBytes(signWith, sums)}\n`);
  await fs.writeFile(file, tarOf([{ name: 'bundle.json', data: json }, { name: 'checksums.txt', data: sums }, { name: 'checksums.txt.sig', data: sig }, ...content.map(([p, d]) => ({ name: p, data: d, mode: entryMode(p) }))]));
  return file;
}

// Two bundles: one shared image, one shared binary; each its own image at the same tag, and its own binary.
const shared = image('shared', [blob('shared layer')]);
const appA = image('app-a', [blob('layer of A'), blob('shared base layer')]);
const appB = image('app-b', [blob('layer of B'), blob('shared base layer')]);
const tool = Buffer.from('tool v1 binary');
const specA: Spec = { version: '1.0.0', created: '2026-01-01T00:00:00.000Z', kubernetes: 'v1.31.2', images: [{ ref: 'r.test/lib/shared:1', img: shared }, { ref: 'r.test/lib/app:1', img: appA }], files: [{ name: 'tool', version: 'v1.0.0', data: tool }] };
const specB: Spec = { version: '2.0.0', created: '2026-02-01T00:00:00.000Z', kubernetes: 'v1.32.0', images: [{ ref: 'r.test/lib/shared:1', img: shared }, { ref: 'r.test/lib/app:1', img: appB }, { ref: 'r.test/lib/app:2', img: appB }], files: [{ name: 'tool', version: 'v1.0.0', data: tool }, { name: 'tool', version: 'v2.0.0', data: Buffer.from('tool v2 binary') }] };
const distinct = (...imgs: ReturnType<typeof image>[]) => new Set(imgs.flatMap((i) => i.blobs.map((b) => b.hex))).size;

let fileA: string;
let fileB: string;
const add = (store: string, file: string, ...more: string[]) => ferry(['bundle', 'add', file, '--trust', pub, '--store', store, '--json', ...more]);
const list = async (store: string) => JSON.parse((await ferry(['bundle', 'list', '--store', store, '--json'])).stdout) as { bundles: { id: string; name: string; version: string; kubernetesVersion: string | null; fingerprint: string; current: boolean }[] };
const blobsIn = async (store: string) => (await fs.readdir(path.join(store, 'images', 'blobs', 'sha256'))).sort();

/** Every file below a directory with its bytes' hash (links as their target), to show nothing changed. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true }).catch(() => [])) {
      const r = path.join(rel, e.name);
      if (e.isSymbolicLink()) out[r] = `-> ${await fs.readlink(path.join(dir, r))}`;
      else if (e.isDirectory()) await walk(r);
      else out[r] = sha256Hex(await fs.readFile(path.join(dir, r)));
    }
  };
  await walk('');
  return out;
}

beforeAll(async () => {
  work = await tmpdir('ferry-site-store-');
  pub = path.join(work, 'ferry.pub');
  await fs.writeFile(pub, pem(site.publicKey));
  fileA = await bundleFile(path.join(work, 'site-1.0.0.ferry.tar'), specA);
  fileB = await bundleFile(path.join(work, 'site-2.0.0.ferry.tar'), specB);
});

describe('the site store holds several bundles, content once', () => {
  it('adds two bundles, stores each shared blob and binary once, and lists both with their ids', async () => {
    const store = path.join(await tmpdir(), 'store');
    const a = await add(store, fileA);
    expect(a.code, a.stderr).toBe(0);
    expect(JSON.parse(a.stdout)).toMatchObject({ id: 'site-1.0.0', already: false, blobsAdded: distinct(shared, appA), filesAdded: 1 });
    const b = await add(store, fileB);
    expect(b.code, b.stderr).toBe(0);
    // Only what A did not bring: B's own config, layer and manifest, and tool v2.
    expect(JSON.parse(b.stdout)).toMatchObject({ id: 'site-2.0.0', blobsAdded: distinct(shared, appA, appB) - distinct(shared, appA), filesAdded: 1 });
    expect(await blobsIn(store)).toHaveLength(distinct(shared, appA, appB));
    expect(distinct(shared, appA, appB)).toBeLessThan(distinct(shared, appA) + distinct(shared, appB));
    expect((await fs.readdir(path.join(store, 'files', 'tool'))).sort()).toEqual(['v1.0.0', 'v2.0.0']);
    const l = await list(store);
    expect(l.bundles).toEqual([
      { id: 'site-1.0.0', name: 'site', version: '1.0.0', kubernetesVersion: 'v1.31.2', fingerprint: fingerprint(site.publicKey), current: false },
      { id: 'site-2.0.0', name: 'site', version: '2.0.0', kubernetesVersion: 'v1.32.0', fingerprint: fingerprint(site.publicKey), current: false },
    ]);
    // Each bundle keeps its signed table and its own index.
    for (const id of ['site-1.0.0', 'site-2.0.0']) expect((await fs.readdir(path.join(store, 'bundles', id))).sort()).toEqual(expect.arrayContaining([...TABLE, 'index.json', '.ferry-unpacked']));
    // Adding one again writes nothing new.
    const again = await add(store, fileB);
    expect(JSON.parse(again.stdout)).toMatchObject({ already: true, blobsAdded: 0 });
    // The union's versions.json lists both bundles' binaries.
    const versions = JSON.parse(await fs.readFile(path.join(store, 'files', 'versions.json'), 'utf8')) as { path: string }[];
    expect(versions.map((v) => v.path)).toEqual(['tool/v1.0.0/linux-amd64/tool', 'tool/v2.0.0/linux-amd64/tool']);
  });

  it('refuses a bundle whose binary clashes with another bundle at the same path, and changes nothing', async () => {
    const store = path.join(await tmpdir(), 'store');
    expect((await add(store, fileA)).code).toBe(0);
    const before = await snapshot(store);
    const clash = await bundleFile(path.join(work, 'clash.tar'), { ...specA, version: '1.0.1', files: [{ name: 'tool', version: 'v1.0.0', data: Buffer.from('another tool v1') }] });
    const r = await add(store, clash);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[STORE_FILE_CLASH\]: site-1\.0\.1 carries files\/tool\/v1\.0\.0\/linux-amd64\/tool with other content than site-1\.0\.0/);
    expect(await snapshot(store)).toEqual(before);
  });

  it('refuses a tampered bundle as unpack does, and a bundle another key signed, before the store changes', async () => {
    const store = path.join(await tmpdir(), 'store');
    expect((await add(store, fileA)).code).toBe(0);
    const before = await snapshot(store);
    const bytes = await fs.readFile(fileB);
    const at = bytes.indexOf(Buffer.from('tool v2 binary'));
    bytes[at] = bytes[at]! ^ 1;
    const tampered = path.join(work, 'tampered.tar');
    await fs.writeFile(tampered, bytes);
    const t = await add(store, tampered);
    expect(t.code).toBe(5);
    expect(t.stderr).toMatch(/error\[BUNDLE_CHECKSUM_MISMATCH\]/);
    const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const forged = await bundleFile(path.join(work, 'forged.tar'), specB, other.privateKey);
    const f = await add(store, forged);
    expect(f.code).toBe(5);
    expect(f.stderr).toMatch(/error\[BUNDLE_SIGNATURE_INVALID\]/);
    expect(await snapshot(store)).toEqual(before);
  });

  it('finishes an add that was killed half-way when it is run again', async () => {
    const store = path.join(await tmpdir(), 'store');
    expect((await add(store, fileA)).code).toBe(0);
    // A large binary keeps the add busy long enough to be killed while it stages.
    const big = await bundleFile(path.join(work, 'big.tar'), { ...specB, version: '3.0.0', files: [{ name: 'big', version: 'v1', data: Buffer.alloc(160 << 20, 7) }] });
    const child = spawn(process.execPath, [path.resolve('bin/ferry'), 'bundle', 'add', big, '--trust', pub, '--store', store], { stdio: 'ignore' });
    const staging = path.join(store, '.staging', 'site-3.0.0');
    const deadline = Date.now() + 60_000;
    let seen = false;
    while (Date.now() < deadline && child.exitCode === null) {
      if ((await fs.readdir(path.join(staging, 'files', 'big', 'v1', 'linux-amd64')).catch(() => [])).length) {
        seen = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r).once('error', r));
    expect(seen, 'the add was seen staging before it was killed').toBe(true);
    expect((await list(store)).bundles.map((b) => b.id)).toEqual(['site-1.0.0']);
    const r = await add(store, big);
    expect(r.code, r.stderr).toBe(0);
    expect((await list(store)).bundles.map((b) => b.id)).toEqual(['site-1.0.0', 'site-3.0.0']);
    expect(await fs.readdir(path.join(store, '.staging'))).toEqual([]);
    expect((await fs.stat(path.join(store, 'files', 'big', 'v1', 'linux-amd64', 'big'))).size).toBe(160 << 20);
  });

  it('also finishes an add killed after some content landed but before the bundle was registered', async () => {
    const store = path.join(await tmpdir(), 'store');
    expect((await add(store, fileA)).code).toBe(0);
    expect((await add(store, fileB)).code).toBe(0);
    // What a kill between moving content into place and registering leaves: B's blobs in part, no B.
    await fs.rm(path.join(store, 'bundles', 'site-2.0.0'), { recursive: true });
    await fs.rm(path.join(store, 'images', 'blobs', 'sha256', appB.manifest.hex));
    const r = await add(store, fileB);
    expect(r.code, r.stderr).toBe(0);
    // The missing blob is added; tool v2, which no registered bundle lists, is written again: the
    // store cannot tell whose it is (a blob is named by its digest, a binary is not).
    expect(JSON.parse(r.stdout)).toMatchObject({ blobsAdded: 1, filesAdded: 1 });
    expect(await blobsIn(store)).toHaveLength(distinct(shared, appA, appB));
    expect((await list(store)).bundles.map((b) => b.id)).toEqual(['site-1.0.0', 'site-2.0.0']);
  });

  it('prunes only on --yes (without a terminal it asks and refuses), keeps the current bundle and what it needs', async () => {
    const store = path.join(await tmpdir(), 'store');
    expect((await add(store, fileA)).code).toBe(0);
    expect((await add(store, fileB)).code).toBe(0);
    await (await SiteStore.open(store)).setCurrent('site-2.0.0');
    const stray = path.join(store, 'files', 'notes.txt');
    await fs.writeFile(stray, 'an operator note');
    expect(JSON.parse((await ferry(['bundle', 'prune', '--store', store, '--json'])).stdout)).toMatchObject({ pruned: false, bundles: [], blobs: 0, files: 0, unknown: ['notes.txt'] });
    const before = await snapshot(store);
    const asked = await ferry(['bundle', 'prune', '--store', store, '--keep', 'site-2.0.0']);
    expect(asked.code).toBe(2);
    expect(asked.stderr).toMatch(/PROMPT_NO_TTY/);
    expect(await snapshot(store)).toEqual(before);
    const unknown = await ferry(['bundle', 'prune', '--store', store, '--keep', 'site-9', '--yes']);
    expect(unknown.stderr).toMatch(/STORE_BUNDLE_UNKNOWN/);
    // Keeping only A still keeps B: it is current.
    expect(JSON.parse((await ferry(['bundle', 'prune', '--store', store, '--keep', 'site-1.0.0', '--yes', '--json'])).stdout)).toMatchObject({ pruned: false });
    const p = await ferry(['bundle', 'prune', '--store', store, '--keep', 'site-2.0.0', '--yes', '--json']);
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout)).toMatchObject({ pruned: true, bundles: ['site-1.0.0'], blobs: distinct(shared, appA, appB) - distinct(shared, appB), files: 0 });
    expect(await blobsIn(store)).toEqual([...new Set([...shared.blobs, ...appB.blobs].map((b) => b.hex))].sort());
    expect((await list(store)).bundles.map((b) => [b.id, b.current])).toEqual([['site-2.0.0', true]]);
    expect(await fs.readFile(stray, 'utf8')).toBe('an operator note');
    // tool v1 is B's too, so it stays.
    expect((await fs.readdir(path.join(store, 'files', 'tool'))).sort()).toEqual(['v1.0.0', 'v2.0.0']);
  });

  it('refuses a store directory ferry did not make', async () => {
    const store = await tmpdir();
    await fs.writeFile(path.join(store, 'mine.txt'), 'mine');
    const r = await add(store, fileA);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[STORE_NOT_FERRY\]/);
    expect(await fs.readdir(store)).toEqual(['mine.txt']);
  });
});

describe('prune after an upgrade (issue 19 item 3): content only older bundles have goes; the previous bundle and what pods use stay', () => {
  const appC = image('app-c', [blob('layer of C'), blob('shared base layer')]);
  const specC: Spec = { version: '3.0.0', created: '2026-03-01T00:00:00.000Z', kubernetes: 'v1.33.0', images: [{ ref: 'r.test/lib/shared:1', img: shared }, { ref: 'r.test/lib/app:3', img: appC }], files: [{ name: 'tool', version: 'v3.0.0', data: Buffer.from('tool v3 binary') }] };
  let fileC: string;
  const prune = async (store: string, ...args: string[]) => {
    const r = await ferry(['bundle', 'prune', '--store', store, '--json', ...args]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { pruned: boolean; dryRun?: boolean; bundles: string[]; blobs: number; kept: { id: string; why: string }[]; fileList?: string[] };
  };
  const threeBundles = async (current: string) => {
    const store = path.join(await tmpdir(), 'store');
    for (const f of [fileA, fileB, fileC]) expect((await add(store, f)).code).toBe(0);
    await (await SiteStore.open(store)).setCurrent(current);
    return store;
  };
  beforeAll(async () => {
    fileC = await bundleFile(path.join(work, 'site-3.0.0.ferry.tar'), specC);
  });

  it('lists what would go with --dry-run and removes nothing; then keeps the current and the previous bundle, and --all keeps only the current', async () => {
    const store = await threeBundles('site-3.0.0');
    const before = await snapshot(store);
    const dry = await prune(store, '--dry-run');
    expect(dry).toMatchObject({ pruned: false, dryRun: true, bundles: ['site-1.0.0'], fileList: [] });
    expect(dry.kept).toEqual([{ id: 'site-2.0.0', why: 'the previous bundle' }, { id: 'site-3.0.0', why: 'current' }]);
    expect(await snapshot(store)).toEqual(before);
    expect(await prune(store, '--yes')).toMatchObject({ pruned: true, bundles: ['site-1.0.0'], blobs: distinct(shared, appA, appB, appC) - distinct(shared, appB, appC) });
    expect((await list(store)).bundles.map((b) => b.id)).toEqual(['site-2.0.0', 'site-3.0.0']);
    const all = await prune(store, '--all', '--yes');
    expect(all).toMatchObject({ pruned: true, bundles: ['site-2.0.0'] });
    expect(await blobsIn(store)).toEqual([...new Set([...shared.blobs, ...appC.blobs].map((b) => b.hex))].sort());
    // tool v1 and v2 were only the older bundles'.
    expect((await fs.readdir(path.join(store, 'files', 'tool'))).sort()).toEqual(['v3.0.0']);
  });

  it('never removes a bundle whose image a running pod uses (by digest or by tag), nor a newer bundle staged for an upgrade', async () => {
    const store = await threeBundles('site-2.0.0');
    const inUse = path.join(await tmpdir(), 'in-use.txt');
    // As the API reports a pod of A's app (imageID by digest); a tag every kept bundle carries at the same digest keeps nothing more.
    await fs.writeFile(inUse, `r.test/lib/app@sha256:${appA.manifest.hex}\nr.test/lib/shared:1\n`);
    const r = await prune(store, '--all', '--in-use', inUse, '--dry-run');
    expect(r.bundles).toEqual([]);
    expect(r.kept).toEqual([
      { id: 'site-1.0.0', why: `in use by a running pod: r.test/lib/app:1` },
      { id: 'site-2.0.0', why: 'current' },
      { id: 'site-3.0.0', why: 'newer than the current bundle' },
    ]);
    // By tag: A's app:1 is another image than B's app:1, so a pod running that tag (as crictl names it) keeps A as well.
    await fs.writeFile(inUse, 'docker.io/library/unrelated:1\n');
    expect((await prune(store, '--all', '--in-use', inUse, '--dry-run')).bundles).toEqual(['site-1.0.0']);
    await fs.writeFile(inUse, 'r.test/lib/app:1\n');
    expect((await prune(store, '--all', '--in-use', inUse, '--dry-run')).kept[0]).toEqual({ id: 'site-1.0.0', why: 'in use by a running pod: r.test/lib/app:1' });
    await fs.writeFile(inUse, 'docker.io/library/unrelated:1\n');
    expect(await prune(store, '--all', '--in-use', inUse, '--yes')).toMatchObject({ pruned: true, bundles: ['site-1.0.0'] });
  });
});

describe('install makes a bundle current in the store; an older one never replaces a newer one', () => {
  it('links BUNDLE_DIR to the current bundle, refuses a rollback unless allowed, and keeps both bundles', async () => {
    const root = await tmpdir();
    const host = new Host(root);
    await addAndUse(host, fileB, { trust: site.publicKey });
    const version = async () => (JSON.parse(await fs.readFile(path.join(root, BUNDLE_DIR, 'bundle.json'), 'utf8')) as BundleManifest).version;
    expect(await version()).toBe('2.0.0');
    expect((await fs.lstat(path.join(root, BUNDLE_DIR))).isSymbolicLink()).toBe(true);
    // The view reads like an unpacked bundle: the union's images and files, its own table.
    expect(await fs.readFile(path.join(root, BUNDLE_DIR, 'files', 'tool', 'v2.0.0', 'linux-amd64', 'tool'), 'utf8')).toBe('tool v2 binary');
    await fs.access(path.join(root, BUNDLE_DIR, 'images', 'blobs', 'sha256', appB.manifest.hex));
    const before = await snapshot(root);
    await expect(addAndUse(host, fileA, { trust: site.publicKey })).rejects.toMatchObject({ code: 'BUNDLE_DOWNGRADE', exit: 'usage' });
    expect(await snapshot(root)).toEqual(before);
    // bundle add stages it beside the current one without making it current.
    const staged = await add(path.join(root, STORE_DIR), fileA);
    expect(staged.code, staged.stderr).toBe(0);
    expect((await list(path.join(root, STORE_DIR))).bundles.map((b) => [b.id, b.current])).toEqual([['site-1.0.0', false], ['site-2.0.0', true]]);
    expect(await version()).toBe('2.0.0');
    await addAndUse(host, fileA, { trust: site.publicKey, allowDowngrade: true });
    expect(await version()).toBe('1.0.0');
  });

  it('replaces a tree an earlier ferry unpacked at BUNDLE_DIR with the link, and refuses a link of the operator', async () => {
    const root = await tmpdir();
    const tree = path.join(root, BUNDLE_DIR);
    expect((await ferry(['bundle', 'unpack', fileA, '--trust', pub, '--to', tree])).code).toBe(0);
    await addAndUse(new Host(root), fileB, { trust: site.publicKey });
    expect((await fs.lstat(tree)).isSymbolicLink()).toBe(true);
    expect(await fs.readdir(path.dirname(tree))).toEqual(expect.not.arrayContaining(['bundle.ferry-old', 'bundle.ferry-link']));
    // A link elsewhere is not ferry's: refused, and left as it was.
    const other = await tmpdir();
    await fs.mkdir(path.join(other, 'var/lib/ferry'), { recursive: true });
    await fs.symlink('/srv/mine', path.join(other, BUNDLE_DIR));
    await expect(addAndUse(new Host(other), fileB, { trust: site.publicKey })).rejects.toMatchObject({ code: 'UNPACK_TARGET_NOT_FERRY' });
    expect(await fs.readlink(path.join(other, BUNDLE_DIR))).toBe('/srv/mine');
  });
});

describe('ferry serve of the store serves the union', () => {
  let server: SiteServer;
  let store: string;
  beforeAll(async () => {
    store = path.join(await tmpdir(), 'store');
    const s = await SiteStore.open(store);
    await s.add(fileA, { trust: site.publicKey });
    await s.add(fileB, { trust: site.publicKey });
    await s.setCurrent('site-2.0.0');
    server = await startServer({ bundleDir: store, listen: '127.0.0.1:0' });
  });
  afterAll(() => server?.close());

  const inspect = (ref: string) => skopeoInspect(['--tls-verify=false', `docker://${server.url.slice('http://'.length)}/${ref}`]);

  it("answers skopeo for both bundles' tags: the current bundle's tag wins, the other image stays reachable by digest", async () => {
    expect((await inspect('lib/shared:1')).Digest).toBe(`sha256:${shared.manifest.hex}`);
    expect((await inspect('lib/app:1')).Digest).toBe(`sha256:${appB.manifest.hex}`);
    expect((await inspect('lib/app:2')).Digest).toBe(`sha256:${appB.manifest.hex}`);
    expect((await inspect(`lib/app@sha256:${appA.manifest.hex}`)).Labels).toEqual({ tag: 'app-a' });
    const tags = (await (await fetch(`${server.url}/v2/lib/app/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags).toEqual(['1', '2']);
  });

  it("serves every bundle's binaries under /files/, a versions.json and checksums of the union", async () => {
    for (const v of ['v1.0.0', 'v2.0.0']) expect((await fetch(`${server.url}/files/tool/${v}/linux-amd64/tool`)).status).toBe(200);
    const versions = (await (await fetch(`${server.url}/files/versions.json`)).json()) as { path: string }[];
    expect(versions.map((v) => v.path)).toEqual(['tool/v1.0.0/linux-amd64/tool', 'tool/v2.0.0/linux-amd64/tool']);
    const sums = await (await fetch(`${server.url}/files/checksums.txt`)).text();
    expect(sums).toContain(`${sha256Hex(tool)}  tool/v1.0.0/linux-amd64/tool`);
    expect(sums).toContain('tool/v2.0.0/linux-amd64/tool');
  });

  it('picks up a newly current bundle: its tag then wins', async () => {
    await (await SiteStore.open(store)).setCurrent('site-1.0.0', { allowDowngrade: true });
    const deadline = Date.now() + 30_000;
    let digest: unknown;
    while (Date.now() < deadline && (digest = (await inspect('lib/app:1')).Digest) !== `sha256:${appA.manifest.hex}`) await new Promise((r) => setTimeout(r, 200));
    expect(digest).toBe(`sha256:${appA.manifest.hex}`);
    // B's app:2 is still served: nothing of B was removed.
    expect((await inspect('lib/app:2')).Digest).toBe(`sha256:${appB.manifest.hex}`);
  });
});

describe('the install guard (issue 18 item 5): another Kubernetes version on an initialised node is refused before anything changes', () => {
  /** A stand-in for the API server's /version (only that path; the real one runs in the site suite). */
  async function versionStandin(gitVersion: string): Promise<{ url: string; close: () => void }> {
    const http = await import('node:http');
    const srv = http.createServer((req, res) => {
      res.writeHead(req.url === '/version' ? 200 : 404, { 'Content-Type': 'application/json' });
      res.end(req.url === '/version' ? JSON.stringify({ major: '1', minor: '31', gitVersion }) : '{}');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(srv.address() as { port: number }).port}`, close: () => srv.close() };
  }
  const adminConf = (server: string) => `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "${server}", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`;
  async function initialised(server: string, files: Record<string, string> = {}): Promise<string> {
    const root = await tmpdir();
    for (const [f, c] of Object.entries({ '/etc/kubernetes/admin.conf': adminConf(server), ...files })) {
      await fs.mkdir(path.dirname(path.join(root, f)), { recursive: true });
      await fs.writeFile(path.join(root, f), c);
    }
    return root;
  }
  const answersFile = async () => {
    const f = path.join(work, 'answers.yaml');
    await fs.writeFile(f, 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\nnode: {name: k8s-server-01, ip: 127.0.0.1}\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\n');
    return f;
  };
  const install = async (root: string, bundle: string) => ferry(['install', bundle, '--trust', pub, '--root', root, '--answers', await answersFile(), '--ignore-preflight', 'root']);

  it('reads the version from the API server, refuses with INSTALL_VERSION_MISMATCH naming ferry upgrade and bundle add, and writes nothing', async () => {
    const api = await versionStandin('v1.31.2');
    try {
      const root = await initialised(api.url);
      const before = await snapshot(root);
      const r = await install(root, fileB);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/error\[INSTALL_VERSION_MISMATCH\]: this node's cluster runs Kubernetes v1\.31\.2 \(from the API server\); site-2\.0\.0\.ferry\.tar carries v1\.32\.0/);
      expect(r.stderr).toContain('ferry upgrade');
      expect(r.stderr).toContain('ferry bundle add site-2.0.0.ferry.tar');
      expect(await snapshot(root)).toEqual(before);
    } finally {
      api.close();
    }
  });

  it("falls back to the kubeadm ClusterConfiguration, then to the installed bundle's manifest, when the API does not answer", async () => {
    const { guardInstallVersion } = await import('../../src/install/site-store.js');
    const down = 'http://127.0.0.1:9';
    const kubeadm = await initialised(down, { '/etc/ferry/kubeadm.yaml': 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.32.0\n' });
    const before = await snapshot(kubeadm);
    const r = await install(kubeadm, fileA);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/INSTALL_VERSION_MISMATCH\]: this node's cluster runs Kubernetes v1\.32\.0 \(from \/etc\/ferry\/kubeadm\.yaml\)/);
    expect(await snapshot(kubeadm)).toEqual(before);
    await expect(guardInstallVersion(new Host(kubeadm), fileB)).resolves.toBeUndefined();

    const bundled = await initialised(down);
    await addAndUse(new Host(bundled), fileA, { trust: site.publicKey });
    await expect(guardInstallVersion(new Host(bundled), fileB)).rejects.toMatchObject({ code: 'INSTALL_VERSION_MISMATCH', exit: 'usage', message: expect.stringContaining('v1.31.2 (from the installed bundle') });
    // The same version is an idempotent re-run; a node without admin.conf is not initialised.
    await expect(guardInstallVersion(new Host(bundled), fileA)).resolves.toBeUndefined();
    await expect(guardInstallVersion(new Host(await tmpdir()), fileB)).resolves.toBeUndefined();
  });
});
