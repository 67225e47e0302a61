import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { tarOf } from '../../fixtures/hostile.js';
import { checksumsText, manifestBytes, TABLE, type BundleManifest } from '../../src/bundle/format.js';
import { UNPACKED_MARKER } from '../../src/bundle/unpack.js';
import { Host } from '../../src/install/host.js';
import { RecordingHost } from '../../src/install/recording-host.js';
import { verifyBundle } from '../../src/bundle/verify.js';
import { firstServerSteps } from '../../src/install/first-server.js';
import { nodeJoinSteps, type NodeJoinPayload } from '../../src/install/node-join.js';
import { BUNDLE_DIR, BUNDLE_PUB, PKI_DIR } from '../../src/install/paths.js';
import { fingerprint, signBytes } from '../../src/sign/keys.js';
import { initPki } from '../../src/sign/pki.js';
import { sha256Hex } from '../../src/util/digest.js';
import { silentReporter } from '../../src/util/progress.js';
import { ferry } from '../helpers/cli.js';
import { tmpdir } from '../helpers/peers.js';

/**
 * Issue 10 items 4, 10 and 11, with real bundles signed the way build signs them and the real
 * CLI: unpack (and install and a joining server's store step) refuses a rollback and a directory
 * that is not ferry's; inspect never passes off the key bundle.json names as the signer.
 */

const site = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const attacker = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
let work: string;
let sitePub: string;
let attackerPub: string;

const pem = (k: KeyObject) => (k.type === 'public' ? k : createPublicKey(k)).export({ type: 'spki', format: 'pem' }) as string;

/** A valid bundle: bundle.json claims `claims` as its signer, and `signWith` signs the table. */
async function bundleFile(name: string, m: { name?: string; version: string; created: string }, o: { signWith?: KeyObject; claims?: KeyObject } = {}): Promise<string> {
  const content = [
    { path: 'files/versions.json', data: Buffer.from('[]\n') },
    { path: 'install.sh', data: Buffer.from(`#!/bin/sh\necho ${m.version}\n`) },
  ];
  const claimed = createPublicKey(o.claims ?? site.privateKey);
  const manifest: BundleManifest = {
    formatVersion: 1,
    name: m.name ?? 'site',
    version: m.version,
    created: m.created,
    ferryVersion: '0.1.0',
    platforms: ['linux/amd64'],
    images: [],
    charts: [],
    files: [],
    runtime: [],
    signer: { fingerprint: fingerprint(claimed), publicKey: pem(claimed) },
    contentSize: content.reduce((n, c) => n + c.data.length, 0),
    entries: content.length + TABLE.length,
  };
  const json = manifestBytes(manifest);
  const sums = checksumsText([{ path: 'bundle.json', sha256: sha256Hex(json) }, ...content.map((c) => ({ path: c.path, sha256: sha256Hex(c.data) }))]);
  const sig = Buffer.from(`${signBytes(o.signWith ?? site.privateKey, sums)}\n`);
  const file = path.join(work, name);
  await fs.writeFile(file, tarOf([{ name: 'bundle.json', data: json }, { name: 'checksums.txt', data: sums }, { name: 'checksums.txt.sig', data: sig }, ...content.map((c) => ({ name: c.path, data: c.data, mode: c.path === 'install.sh' ? 0o755 : 0o644 }))]));
  return file;
}

const unpack = (file: string, to: string, ...more: string[]) => ferry(['bundle', 'unpack', file, '--trust', sitePub, '--to', to, ...more]);
const versionIn = async (dir: string) => (JSON.parse(await fs.readFile(path.join(dir, 'bundle.json'), 'utf8')) as BundleManifest).version;

/** Every file below a directory with its content, to show that a refusal changed nothing. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) await walk(r);
      else out[r] = await fs.readFile(path.join(dir, r), 'utf8');
    }
  };
  await walk('');
  return out;
}

beforeAll(async () => {
  work = await tmpdir('ferry-unpack-replace-');
  sitePub = path.join(work, 'ferry.pub');
  attackerPub = path.join(work, 'attacker.pub');
  await fs.writeFile(sitePub, pem(site.publicKey));
  await fs.writeFile(attackerPub, pem(attacker.publicKey));
});

const answers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'k8s-server-01', ip: '127.0.0.1' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' } as const;
const installUnpack = (root: string, bundle: string, allowDowngrade?: boolean) => {
  const steps = firstServerSteps({ host: new Host(root), bundle, answers, verify: { trust: site.publicKey }, reporter: silentReporter, allowDowngrade });
  return steps.find((s) => s.id === 'unpack')!.apply(() => {});
};
const payload: NodeJoinPayload = { role: 'server', name: 'k8s-server-02', ip: '127.0.0.2', domain: 'site.test', fqdn: 'k8s-cluster.site.test', serverIps: ['127.0.0.1'], firstServerIp: '127.0.0.1', registries: [], pauseImage: 'registry.k8s.io/pause:3.10', kubernetesVersion: 'v1.37.2', join: { token: 't', caCertHash: 'sha256:00' } };
const joinStore = (root: string, bundle: string, allowDowngrade?: boolean) => nodeJoinSteps(new Host(root), payload, { bundleFile: bundle, allowDowngrade }).find((s) => s.id === 'store')!.apply(() => {});

describe('unpack refuses a rollback (issue 10 item 4)', () => {
  // [what the incoming bundle is, its version and created] against an unpacked site 1.2.0 of June.
  const older: [string, string, string][] = [
    ['older by version and by creation time', '1.1.0', '2025-05-01T00:00:00.000Z'],
    ['the same version, created earlier', '1.2.0', '2025-05-01T00:00:00.000Z'],
    ['created later, with a lower semver version', '1.1.9', '2025-07-01T00:00:00.000Z'],
    ['a lower prerelease of the same version, created later', '1.2.0-rc.1', '2025-07-01T00:00:00.000Z'],
  ];
  it.each(older)('refuses a bundle %s, naming both versions, unless --allow-downgrade', async (what, version, created) => {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile(`new-${what}.tar`, { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    const before = await snapshot(dir);
    const old = await bundleFile(`old-${what}.tar`, { version, created });
    const r = await unpack(old, dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[BUNDLE_DOWNGRADE\]: refusing to roll back/);
    expect(r.stderr).toContain('site 1.2.0 (created 2025-06-01T00:00:00.000Z)');
    expect(r.stderr).toContain(`site ${version} (created ${created})`);
    expect(r.stderr).toContain('--allow-downgrade');
    expect(await snapshot(dir)).toEqual(before);
    const forced = await unpack(old, dir, '--allow-downgrade');
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toMatch(/replacing it anyway \(--allow-downgrade\)/);
    expect(await versionIn(dir)).toBe(version);
  });

  // Issue 21 item 2: the order is explicit (semver, then the signed build time) and fails closed.
  it('counts versions that are not both semver and differ as of unknown order: a downgrade, whatever their creation times', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('cal-new.tar', { version: '2025.06', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    const later = await bundleFile('cal-later.tar', { version: '2025.07', created: '2025-07-01T00:00:00.000Z' });
    const r = await unpack(later, dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/BUNDLE_DOWNGRADE.*site 2025\.06 .* site 2025\.07 .*not both semver versions, so their order is not known/);
    expect(await versionIn(dir)).toBe('2025.06');
    expect((await unpack(later, dir, '--allow-downgrade')).code).toBe(0);
    expect(await versionIn(dir)).toBe('2025.07');
  });

  it('orders by semver first: a higher version is newer even when its creation time is earlier', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('v1.tar', { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    const r = await unpack(await bundleFile('v2.tar', { version: '1.3.0', created: '2025-01-01T00:00:00.000Z' }), dir);
    expect(r.code, r.stderr).toBe(0);
    expect(await versionIn(dir)).toBe('1.3.0');
  });

  it('counts an unreadable creation time as older', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('t1.tar', { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    const r = await unpack(await bundleFile('t2.tar', { version: '1.2.0', created: 'yesterday-ish' }), dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/BUNDLE_DOWNGRADE.*its creation time cannot be read, which counts as older/);
    // The other way round, the installed one's unreadable time is the older.
    const other = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('t3.tar', { version: '1.2.0', created: 'garbled' }), other)).code).toBe(0);
    expect((await unpack(await bundleFile('t4.tar', { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' }), other)).code).toBe(0);
  });

  const damaged: [string, (dir: string) => Promise<void>, RegExp][] = [
    ['missing', (d) => fs.rm(path.join(d, 'bundle.json')), /site 1\.2\.0/],
    ['not JSON', (d) => fs.writeFile(path.join(d, 'bundle.json'), '{"name": "site", "vers'), /site 1\.2\.0/],
    [
      'missing, and the marker an older ferry wrote names no version',
      async (d) => {
        await fs.rm(path.join(d, 'bundle.json'));
        await fs.writeFile(path.join(d, UNPACKED_MARKER), `${JSON.stringify({ bundle: 'site-1.2.0', created: '2025-06-01T00:00:00.000Z', checksums: '0', signer: fingerprint(site.publicKey) })}\n`);
      },
      /not known/,
    ],
    ['missing, with a damaged marker', async (d) => {
      await fs.rm(path.join(d, 'bundle.json'));
      await fs.writeFile(path.join(d, UNPACKED_MARKER), 'garbage');
    }, /not known/],
  ];
  it.each(damaged)('falls back to the marker, or refuses, when a marked tree\'s bundle.json is %s', async (_what, damage, names) => {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('d1.tar', { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    await damage(dir);
    const old = await bundleFile('d0.tar', { version: '1.1.0', created: '2025-05-01T00:00:00.000Z' });
    const r = await unpack(old, dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[BUNDLE_DOWNGRADE\]/);
    expect(r.stderr).toMatch(names);
    expect((await unpack(old, dir, '--allow-downgrade')).code).toBe(0);
    expect(await versionIn(dir)).toBe('1.1.0');
  });

  it('accepts the same bundle again and any newer one', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    const cur = await bundleFile('cur.tar', { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' });
    expect((await unpack(cur, dir)).code).toBe(0);
    expect((await unpack(cur, dir)).code).toBe(0);
    expect((await unpack(await bundleFile('patch.tar', { version: '1.2.1', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    expect((await unpack(await bundleFile('next.tar', { version: '2.0.0', created: '2025-08-01T00:00:00.000Z' }), dir)).code).toBe(0);
    expect(await versionIn(dir)).toBe('2.0.0');
  });

  it("refuses it in install's unpack step and a joining server's store step too, unless allowDowngrade", async () => {
    const newer = await bundleFile('i-new.tar', { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' });
    const older = await bundleFile('i-old.tar', { version: '1.1.0', created: '2025-05-01T00:00:00.000Z' });
    const root = await tmpdir();
    await installUnpack(root, newer);
    await expect(installUnpack(root, older)).rejects.toMatchObject({ code: 'BUNDLE_DOWNGRADE', exit: 'usage', message: expect.stringContaining('site 1.1.0') });
    expect(await versionIn(path.join(root, BUNDLE_DIR))).toBe('1.2.0');
    await installUnpack(root, older, true);
    expect(await versionIn(path.join(root, BUNDLE_DIR))).toBe('1.1.0');

    const node = await tmpdir();
    await fs.mkdir(path.dirname(path.join(node, BUNDLE_PUB)), { recursive: true });
    await fs.writeFile(path.join(node, BUNDLE_PUB), pem(site.publicKey));
    await initPki({ domain: 'site.test', ips: ['127.0.0.1'], outDir: path.join(node, PKI_DIR) });
    const upload = async (f: string) => {
      const to = path.join(node, 'incoming', path.basename(f));
      await fs.mkdir(path.dirname(to), { recursive: true });
      await fs.copyFile(f, to);
      return to;
    };
    await joinStore(node, await upload(newer));
    await expect(joinStore(node, await upload(older))).rejects.toMatchObject({ code: 'BUNDLE_DOWNGRADE' });
    expect(await versionIn(path.join(node, BUNDLE_DIR))).toBe('1.2.0');
    await joinStore(node, await upload(older), true);
    expect(await versionIn(path.join(node, BUNDLE_DIR))).toBe('1.1.0');
  });
});

describe('unpack replaces only a directory ferry marked as an unpacked bundle (issue 10 item 10)', () => {
  // Directories an operator might point --to at by mistake, each with a file of their own.
  const theirs: [string, Record<string, string>][] = [
    ['a bundle.json and notes', { 'bundle.json': '{"name":"mine"}', 'notes.txt': 'my notes' }],
    ['what looks like a signed table, and notes', { 'bundle.json': '{}', 'checksums.txt': '', 'checksums.txt.sig': '', 'notes.txt': 'my notes' }],
    ['only their own files', { 'notes.txt': 'my notes', 'sub/data.bin': 'data' }],
  ];
  it.each(theirs)('refuses a directory holding %s, through unpack and install, and leaves it whole', async (_what, files) => {
    const dir = path.join(await tmpdir(), 'mydata');
    for (const [f, c] of Object.entries(files)) {
      await fs.mkdir(path.dirname(path.join(dir, f)), { recursive: true });
      await fs.writeFile(path.join(dir, f), c);
    }
    const bundle = await bundleFile('b.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' });
    const r = await unpack(bundle, dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`error\\[UNPACK_TARGET_NOT_FERRY\\]: ${dir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} holds files and no \\.ferry-unpacked`));
    expect(await snapshot(dir)).toEqual(files);
    // install unpacks with the same rule (it used to force).
    const root = await tmpdir();
    const target = path.join(root, BUNDLE_DIR);
    await fs.mkdir(target, { recursive: true });
    for (const [f, c] of Object.entries(files)) {
      await fs.mkdir(path.dirname(path.join(target, f)), { recursive: true });
      await fs.writeFile(path.join(target, f), c);
    }
    await expect(installUnpack(root, bundle)).rejects.toMatchObject({ code: 'UNPACK_TARGET_NOT_FERRY', exit: 'usage' });
    expect(await snapshot(target)).toEqual(files);
  });

  it('refuses a file where the directory should be', async () => {
    const dir = await tmpdir();
    await fs.writeFile(path.join(dir, 'mydata'), 'a file');
    const r = await unpack(await bundleFile('f.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' }), path.join(dir, 'mydata'));
    expect(r.stderr).toMatch(/UNPACK_TARGET_NOT_FERRY.*is not a directory/);
    expect(await fs.readFile(path.join(dir, 'mydata'), 'utf8')).toBe('a file');
  });

  it('fills a new or empty directory, marks it, and replaces its own tree whole later', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    await fs.mkdir(dir);
    expect((await unpack(await bundleFile('e1.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    const marker = JSON.parse(await fs.readFile(path.join(dir, UNPACKED_MARKER), 'utf8')) as { bundle: string; signer: string };
    expect(marker).toMatchObject({ bundle: 'site-1.0.0', signer: fingerprint(site.publicKey) });
    await fs.writeFile(path.join(dir, 'stale.txt'), 'left by an older unpack');
    expect((await unpack(await bundleFile('e2.tar', { version: '1.1.0', created: '2025-07-01T00:00:00.000Z' }), dir)).code).toBe(0);
    expect(Object.keys(await snapshot(dir)).sort()).toEqual([UNPACKED_MARKER, 'bundle.json', 'checksums.txt', 'checksums.txt.sig', 'files/versions.json', 'install.sh'].sort());
    expect(await versionIn(dir)).toBe('1.1.0');
  });
});

describe('re-unpacking a bundle already unpacked (issue 22 item 3)', () => {
  it('says so and does no work: only the signed table is read, the tree is left as it was', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    const good = await bundleFile('again.tar', { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' });
    expect((await unpack(good, dir)).code).toBe(0);
    const before = await Promise.all([fs.stat(dir), fs.stat(path.join(dir, 'install.sh'))]);
    // The same archive with one content byte flipped after its signed table: read whole, it is refused...
    const bytes = await fs.readFile(good);
    const at = bytes.indexOf('echo 1.2.0');
    expect(at).toBeGreaterThan(0);
    bytes[at] = 'E'.charCodeAt(0);
    const flipped = path.join(work, 'again-flipped.tar');
    await fs.writeFile(flipped, bytes);
    const whole = await unpack(flipped, path.join(await tmpdir(), 'fresh'));
    expect(whole.code).toBe(5);
    expect(whole.stderr).toContain('BUNDLE_CHECKSUM_MISMATCH');
    // ...while a re-unpack over the tree of its signed table reads no content: it says so, and succeeds.
    const again = await unpack(flipped, dir);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/site 1\.2\.0 is already unpacked in .*bundle: nothing to do/);
    expect(again.stderr).toMatch(/already holds site 1\.2\.0 .*unpacked from this same signed table/);
    const json = await ferry(['bundle', 'unpack', good, '--trust', sitePub, '--to', dir, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, already: true, entries: 0, bytes: 0, fingerprint: fingerprint(site.publicKey) });
    // Nothing was moved, rewritten or staged.
    const after = await Promise.all([fs.stat(dir), fs.stat(path.join(dir, 'install.sh'))]);
    expect(after.map((st) => [st.ino, st.mtimeMs])).toEqual(before.map((st) => [st.ino, st.mtimeMs]));
    expect((await fs.readdir(path.dirname(dir))).sort()).toEqual(['bundle']);
  });

  it('unpacks again when a listed file is gone from the tree, or the bundle is another', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    const good = await bundleFile('again2.tar', { version: '1.2.0', created: '2025-06-01T00:00:00.000Z' });
    expect((await unpack(good, dir)).code).toBe(0);
    await fs.rm(path.join(dir, 'install.sh'));
    const r = await unpack(good, dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^unpacked site 1\.2\.0/);
    expect(await fs.readFile(path.join(dir, 'install.sh'), 'utf8')).toContain('echo 1.2.0');
    const next = await unpack(await bundleFile('again3.tar', { version: '1.2.1', created: '2025-06-01T00:00:00.000Z' }), dir);
    expect(next.stdout).toMatch(/^unpacked site 1\.2\.1/);
  });
});

describe('a bundle an older ferry unpacked, before the marker existed', () => {
  /** A tree as ferry before the marker left it: the same files, its signed table, no marker. */
  async function olderTree(): Promise<string> {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('o1.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    await fs.rm(path.join(dir, UNPACKED_MARKER));
    return dir;
  }
  const newer = () => bundleFile('o2.tar', { version: '1.1.0', created: '2025-07-01T00:00:00.000Z' });

  it('is replaced by a newer bundle when its own table verifies under --trust and lists every file, and unpack says so', async () => {
    const dir = await olderTree();
    const r = await unpack(await newer(), dir);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`${dir} holds site 1.0.0 (created 2025-06-01T00:00:00.000Z) as an older ferry unpacked it`);
    expect(await versionIn(dir)).toBe('1.1.0');
    expect(Object.keys(await snapshot(dir))).toContain(UNPACKED_MARKER);
  });

  it('is still guarded against a rollback', async () => {
    const dir = await olderTree();
    const r = await unpack(await bundleFile('o0.tar', { version: '0.9.0', created: '2025-05-01T00:00:00.000Z' }), dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[BUNDLE_DOWNGRADE\]: refusing to roll back: .* holds site 1\.0\.0/);
    expect(await versionIn(dir)).toBe('1.0.0');
  });

  const spoiled: [string, (dir: string) => Promise<void>, () => string[]][] = [
    ['one file of the operator beside the signed ones', (d) => fs.writeFile(path.join(d, 'notes.txt'), 'mine'), () => []],
    ['a link among them', (d) => fs.symlink('/etc/passwd', path.join(d, 'files', 'passwd')), () => []],
    ['a table another key signed (checked against that key)', async () => {}, () => ['--trust', attackerPub]],
    ['an edited table', (d) => fs.appendFile(path.join(d, 'checksums.txt'), `${'0'.repeat(64)}  notes.txt\n`), () => []],
  ];
  it.each(spoiled)('is refused, and left whole, when it holds %s', async (_what, spoil, argsOf) => {
    const args = argsOf();
    const dir = await olderTree();
    await spoil(dir);
    const before = await fs.readdir(dir, { recursive: true });
    const r = args.length ? await ferry(['bundle', 'unpack', await newer(), ...args, '--to', dir]) : await unpack(await newer(), dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[UNPACK_TARGET_NOT_FERRY\]: .* holds files and no \.ferry-unpacked/);
    expect(await fs.readdir(dir, { recursive: true })).toEqual(before);
    expect(await versionIn(dir)).toBe('1.0.0');
  });
});

describe('unpack never deletes what it cannot prove is its own (issue 21 item 3)', () => {
  it('refuses a tree an older ferry unpacked when a listed file was edited since, and keeps the edit', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('h1.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    await fs.rm(path.join(dir, UNPACKED_MARKER));
    await fs.writeFile(path.join(dir, 'install.sh'), '#!/bin/sh\necho my local fix\n');
    const r = await unpack(await bundleFile('h2.tar', { version: '1.1.0', created: '2025-07-01T00:00:00.000Z' }), dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/UNPACK_TARGET_NOT_FERRY.*install\.sh differs from its signed table/);
    expect(await fs.readFile(path.join(dir, 'install.sh'), 'utf8')).toBe('#!/bin/sh\necho my local fix\n');
  });

  for (const [what, nameOf] of [
    ['DEST.ferry-old', (dest: string) => `${dest}.ferry-old`],
    ['.DEST.ferry-staging', (dest: string) => path.join(path.dirname(dest), `.${path.basename(dest)}.ferry-staging`)],
  ] as const) {
    it(`refuses to remove ${what} when it holds someone else's files, and clears one ferry left`, async () => {
      const dest = path.join(await tmpdir(), 'bundle');
      const beside = nameOf(dest);
      await fs.mkdir(beside, { recursive: true });
      await fs.writeFile(path.join(beside, 'notes.txt'), 'mine');
      const b = await bundleFile('s1.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' });
      const r = await unpack(b, dest);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/UNPACK_TARGET_NOT_FERRY.*is in the way/);
      expect(await fs.readFile(path.join(beside, 'notes.txt'), 'utf8')).toBe('mine');
      // What an interrupted run of ferry leaves there is its own, and goes.
      await fs.rm(path.join(beside, 'notes.txt'));
      await fs.writeFile(path.join(beside, what.endsWith('staging') ? '.ferry-staging' : UNPACKED_MARKER), '');
      await fs.writeFile(path.join(beside, 'install.sh'), 'half written');
      expect((await unpack(b, dest)).code).toBe(0);
      await expect(fs.access(beside)).rejects.toThrow();
      expect(await versionIn(dest)).toBe('1.0.0');
    });
  }
});

describe('unpack names what changes (issue 22 item 4)', () => {
  it('compares versions only within one bundle name, and says that another bundle replaces the installed one', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('n1.tar', { name: 'site', version: '2.0.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    const r = await unpack(await bundleFile('n2.tar', { name: 'demo', version: '0.1.0', created: '2025-05-01T00:00:00.000Z' }), dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('site 2.0.0 (created 2025-06-01T00:00:00.000Z); demo 0.1.0 (created 2025-05-01T00:00:00.000Z) is another bundle');
  });

  it('refuses a bundle signed by another key than the installed one, unless --allow-signer-change, and says so', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    expect((await unpack(await bundleFile('k1.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' }), dir)).code).toBe(0);
    const other = await bundleFile('k2.tar', { version: '1.1.0', created: '2025-07-01T00:00:00.000Z' }, { signWith: attacker.privateKey, claims: attacker.privateKey });
    const r = await ferry(['bundle', 'unpack', other, '--trust', attackerPub, '--to', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[BUNDLE_SIGNER_CHANGED\]: refusing to change the signer/);
    expect(r.stderr).toContain(fingerprint(site.publicKey));
    expect(r.stderr).toContain(fingerprint(attacker.publicKey));
    expect(r.stderr).toContain('--allow-signer-change');
    expect(await versionIn(dir)).toBe('1.0.0');
    // --allow-downgrade is not the flag for it.
    expect((await ferry(['bundle', 'unpack', other, '--trust', attackerPub, '--to', dir, '--allow-downgrade'])).code).toBe(2);
    const ok = await ferry(['bundle', 'unpack', other, '--trust', attackerPub, '--to', dir, '--allow-signer-change']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/signed by .*; the new bundle is signed by .*: the signer changes \(--allow-signer-change\)/);
    expect(await versionIn(dir)).toBe('1.1.0');
  });

  it("shows the signer change in install's plan: the dry run refuses it as the real run does, and says it with --allow-signer-change", async () => {
    const root = await tmpdir();
    await installUnpack(root, await bundleFile('p1.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' }));
    const other = await bundleFile('p2.tar', { version: '1.1.0', created: '2025-07-01T00:00:00.000Z' }, { signWith: attacker.privateKey, claims: attacker.privateKey });
    const v = await verifyBundle(other, { trust: attacker.publicKey });
    const entries = { file: other, files: new Map<string, number>(), summary: { manifest: v.manifest, fingerprint: v.fingerprint, entries: v.entries }, read: async () => undefined, copyOut: async () => {} };
    const warned: string[] = [];
    const reporter = { ...silentReporter, warn: (m: string) => void warned.push(m) };
    const dry = new RecordingHost(root, process.env, { bundle: entries });
    const never = () => Promise.reject(new Error('a dry run adds nothing'));
    await expect(dry.addBundle(other, BUNDLE_DIR, { reporter }, never)).rejects.toMatchObject({ code: 'BUNDLE_SIGNER_CHANGED' });
    await dry.addBundle(other, BUNDLE_DIR, { reporter, allowSignerChange: true }, never);
    expect(warned.join('\n')).toContain(`signed by ${fingerprint(site.publicKey)}; the new bundle is signed by ${fingerprint(attacker.publicKey)}: the signer changes (--allow-signer-change)`);
    // The real install step refuses it the same way.
    const steps = firstServerSteps({ host: new Host(root), bundle: other, answers, verify: { trust: attacker.publicKey }, reporter: silentReporter });
    await expect(steps.find((s) => s.id === 'unpack')!.apply(() => {})).rejects.toMatchObject({ code: 'BUNDLE_SIGNER_CHANGED' });
    expect(await versionIn(path.join(root, BUNDLE_DIR))).toBe('1.0.0');
  });
});

describe('inspect says who signed, only when it checked (issue 10 item 11)', () => {
  it('calls the key bundle.json names a claim, shows the verified signer with --trust, and refuses a wrong one', async () => {
    // Signed by the attacker, while bundle.json claims the site's key.
    const forged = await bundleFile('forged.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' }, { signWith: attacker.privateKey, claims: site.privateKey });
    const siteFp = fingerprint(site.publicKey);
    const plain = await ferry(['bundle', 'inspect', forged]);
    expect(plain.code).toBe(0);
    expect(plain.stdout).not.toMatch(/^signed by/m);
    expect(plain.stdout).toMatch(new RegExp(`^signer: UNVERIFIED; bundle.json claims ${siteFp}`, 'm'));
    const json = JSON.parse((await ferry(['bundle', 'inspect', forged, '--json'])).stdout) as { signature: { verified: boolean; fingerprint?: string } };
    expect(json.signature).toEqual({ verified: false, claimedFingerprint: siteFp });

    const wrong = await ferry(['bundle', 'inspect', forged, '--trust', sitePub]);
    expect(wrong.code).toBe(5);
    expect(wrong.stderr).toMatch(/error\[BUNDLE_SIGNATURE_INVALID\]/);
    expect(wrong.stdout).not.toContain(siteFp);

    const real = await ferry(['bundle', 'inspect', forged, '--trust', attackerPub]);
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(new RegExp(`^signed by ${fingerprint(attacker.publicKey)} \\(verified`, 'm'));
    expect(real.stdout).not.toMatch(new RegExp(`^signed by ${siteFp}`, 'm'));

    const honest = await bundleFile('honest.tar', { version: '1.0.0', created: '2025-06-01T00:00:00.000Z' });
    const ok = JSON.parse((await ferry(['bundle', 'inspect', honest, '--trust', sitePub, '--json'])).stdout) as { signature: unknown };
    expect(ok.signature).toEqual({ verified: true, fingerprint: siteFp });
  });
});
