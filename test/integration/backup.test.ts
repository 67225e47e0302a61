import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MirrorStore } from '../../src/cluster/mirror.js';
import type { SiteState } from '../../src/cluster/state.js';
import { backupKeyId, ensureBackupKey } from '../../src/install/backup-timer.js';
import { Host } from '../../src/install/host.js';
import { BACKUP_DIR, BACKUP_KEY } from '../../src/install/paths.js';
import { backupFileName, etcdutlCtrArgs, IMAGE_ETCDUTL, listBackups, openBackup, readBackupHeader, restoreFiles, restoreSnapshot, saveBackup } from '../../src/ops/backup.js';
import { Layout } from '../../src/oci/layout.js';
import { writeImage, writeLayer } from '../../fixtures/images.js';
import { startContainerd } from '../helpers/containerd.js';
import { endpointStatus, memberList } from '../../src/ops/etcd.js';
import { ferry } from '../helpers/cli.js';
import { etcdBinary, etcdGet, etcdPut, etcdutlBinary, makeEtcdPki, startEtcd, type EtcdPeer, type EtcdPki } from '../helpers/etcd.js';
import { execFileP, freePort, tmpdir, which } from '../helpers/peers.js';

/*
 * Issue 20 item 3: ferry backup against a REAL etcd (the site suite's build) on loopback, with TLS
 * and client-certificate authentication as kubeadm runs it, reached the way a server reaches it
 * (the JSON gateway with the health-check client certificate). Save, verify, tamper, list, prune,
 * and the restore core into a new member with a new peer URL, started and read back.
 */

const ETCD = etcdBinary();
const ETCDUTL = etcdutlBinary();
const skipWhy = ETCD ? undefined : 'no etcd: build it with sh scripts/site/build-components.sh etcd, or set FERRY_ETCD';

const NODE = 'k8s-server-01';
const SENTINEL = 'sentinel-value-4f1c9a';
const CLUSTER_CA_KEY = '-----BEGIN PRIVATE KEY-----\ncluster-ca-key-marker-7d2e\n-----END PRIVATE KEY-----\n';
const SITE_CA_KEY = '-----BEGIN PRIVATE KEY-----\nsite-ca-key-marker-91b3\n-----END PRIVATE KEY-----\n';

let root: string;
let host: Host;
let pki: EtcdPki;
let etcd: EtcdPeer;
let key: Buffer;
let saved: { file: string; bytes: number; seconds: number; snapshotBytes: number; revision: string };
let dbSizeAtSave = 0;
const stops: (() => Promise<void>)[] = [];

const state: SiteState = {
  apiVersion: 'ferry.dev/v1alpha1',
  kind: 'SiteState',
  answers: { domain: 'site.test', clusterFqdn: 'k8s-cluster.site.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' },
  nodes: [{ name: NODE, ip: '127.0.0.1', role: 'server', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-1', joinedAt: '2026-01-01T00:00:00Z' }],
  bundles: [],
  current: 'k8s-1',
} as unknown as SiteState;

const json = (s: string) => JSON.parse(s) as Record<string, any>;
const flip = async (file: string, at: number) => {
  const fh = await fs.open(file, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0]! ^= 0x01;
  await fh.write(b, 0, 1, at);
  await fh.close();
};

beforeAll(async () => {
  if (!ETCD) return;
  root = await tmpdir('ferry-backup-');
  host = new Host(root);
  pki = await makeEtcdPki(path.join(root, 'etcd-pki'));
  // This "server": kubeadm's PKI with the health-check client, the site PKI, the state mirror, admin.conf.
  const etcdPki = path.join(root, 'etc/kubernetes/pki/etcd');
  await fs.mkdir(etcdPki, { recursive: true });
  for (const f of ['ca.crt', 'ca.key', 'server.crt', 'server.key', 'healthcheck-client.crt', 'healthcheck-client.key'] as const) await fs.copyFile(pki.files[f], path.join(etcdPki, f));
  await fs.writeFile(path.join(root, 'etc/kubernetes/pki/ca.key'), CLUSTER_CA_KEY, { mode: 0o600 });
  await fs.writeFile(path.join(root, 'etc/kubernetes/admin.conf'), 'apiVersion: v1\nkind: Config\n');
  await fs.mkdir(path.join(root, 'etc/ferry/pki'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/ferry/pki/ca.key'), SITE_CA_KEY, { mode: 0o600 });
  await fs.writeFile(path.join(root, 'etc/ferry/kubeadm.yaml'), 'kind: ClusterConfiguration\n');
  await fs.mkdir(path.join(root, 'var/lib/ferry/site'), { recursive: true });
  await new MirrorStore(root).copy(state, '7');
  expect(await ensureBackupKey(host)).toBe('made');
  expect(await ensureBackupKey(host)).toBe('kept');
  key = await fs.readFile(host.p(BACKUP_KEY));
  expect(((await fs.stat(host.p(BACKUP_KEY))).mode & 0o777).toString(8)).toBe('600');

  etcd = await startEtcd(ETCD, pki, { name: 'original', dataDir: path.join(root, 'etcd-data') });
  stops.push(() => etcd.stop());
  // About 6 MiB of data: several chunks of the sealed stream, many of the snapshot's messages.
  const value = Buffer.alloc(16 * 1024, 'x');
  for (let i = 0; i < 384; i++) await etcdPut(pki.tls, etcd.endpoint, `/registry/bulk/${i}`, value);
  await etcdPut(pki.tls, etcd.endpoint, '/registry/sentinel', SENTINEL);
}, 240_000);

afterAll(async () => {
  for (const s of stops.reverse()) await s().catch(() => {});
});

describe.skipIf(!ETCD)(`ferry backup against a real etcd with TLS${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, () => {
  it('save writes one sealed file with the snapshot and the PKI, none of it readable without the key, and says nothing of the key', async () => {
    dbSizeAtSave = (await endpointStatus(pki.tls, etcd.endpoint)).dbSize;
    const r = await ferry(['backup', 'save', '--local', '--root', root, '--etcd', etcd.endpoint, '--json'], { timeout: 300_000 });
    expect(r.stderr + r.stdout).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    saved = json(r.stdout) as typeof saved;
    console.log(`backup save: ${saved.bytes} bytes (snapshot ${saved.snapshotBytes}, db ${dbSizeAtSave}) in ${saved.seconds.toFixed(2)}s`);
    expect(path.dirname(saved.file)).toBe(host.p(BACKUP_DIR));
    expect(path.basename(saved.file)).toMatch(new RegExp(`^ferry-backup-\\d{8}T\\d{6}Z-${NODE}\\.fbak$`));
    // At least the values written (etcd's database file is larger than its data, and may grow while it is copied).
    expect(saved.snapshotBytes).toBeGreaterThan(384 * 16 * 1024);
    expect(((await fs.stat(saved.file)).mode & 0o777).toString(8)).toBe('600');
    const h = (await readBackupHeader(saved.file)).header;
    expect(h).toMatchObject({ format: 1, site: 'site.test', node: NODE, keyId: backupKeyId(key) });
    expect(Number(h.etcd.revision)).toBeGreaterThan(384);
    // Encrypted at rest: neither the etcd data nor the CA keys appear in the file.
    const bytes = await fs.readFile(saved.file);
    for (const marker of [SENTINEL, 'cluster-ca-key-marker', 'site-ca-key-marker', '/registry/bulk/']) expect(bytes.includes(Buffer.from(marker))).toBe(false);
    for (const k of [key.toString('hex'), key.toString('base64')]) expect(r.stdout + r.stderr).not.toContain(k);
    expect((await fs.readdir(host.p(BACKUP_DIR))).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  }, 300_000);

  it('verify reads it all: the snapshot as etcd sent it (its sha256 checked) and each file as it was', async () => {
    const r = await ferry(['backup', 'verify', saved.file, '--key', host.p(BACKUP_KEY), '--json']);
    expect(r.code).toBe(0);
    const v = json(r.stdout);
    expect(v.ok).toBe(true);
    expect(v.snapshot.bytes).toBe(saved.snapshotBytes);
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    const byName = new Map((v.entries as { name: string; sha256: string; mode: number }[]).map((e) => [e.name, e]));
    expect(byName.get('files/etc/kubernetes/pki/ca.key')?.sha256).toBe(sha(CLUSTER_CA_KEY));
    expect(byName.get('files/etc/ferry/pki/ca.key')).toMatchObject({ sha256: sha(SITE_CA_KEY), mode: 0o600 });
    expect([...byName.keys()]).toEqual(expect.arrayContaining(['etcd/snapshot.db', 'files/etc/kubernetes/pki/etcd/healthcheck-client.key', 'files/var/lib/ferry/site/state.json', 'files/etc/ferry/kubeadm.yaml']));
    // The key itself is never in a backup.
    expect([...byName.keys()].some((n) => n.includes('backup.key'))).toBe(false);
  });

  it('verify refuses a flipped byte in the body or the header, a cut file, another key and a foreign file, each with its own code', async () => {
    const dir = await tmpdir('ferry-backup-bad-');
    const copy = async (name: string) => {
      const f = path.join(dir, name);
      await fs.copyFile(saved.file, f);
      return f;
    };
    const verify = (f: string, k = host.p(BACKUP_KEY)) => ferry(['backup', 'verify', f, '--key', k]);
    const { bodyOffset } = await readBackupHeader(saved.file);
    const size = (await fs.stat(saved.file)).size;

    const mid = await copy('mid.fbak');
    await flip(mid, Math.floor((bodyOffset + size) / 2));
    const m = await verify(mid);
    expect(m.code).toBe(5);
    expect(m.stderr).toMatch(/error\[BACKUP_CORRUPT\].*fails its authentication tag/);

    // The header is plaintext, but every frame is bound to it: "site.test" → "site.tesu".
    const hdr = await copy('header.fbak');
    const at = (await fs.readFile(hdr)).subarray(0, bodyOffset).indexOf('site.test') + 8;
    await flip(hdr, at);
    expect((await readBackupHeader(hdr)).header.site).toBe('site.tesu');
    const hv = await verify(hdr);
    expect(hv.code).toBe(5);
    expect(hv.stderr).toMatch(/error\[BACKUP_CORRUPT\]/);

    const cut = await copy('cut.fbak');
    await fs.truncate(cut, size - 1000);
    const c = await verify(cut);
    expect(c.code).toBe(5);
    expect(c.stderr).toMatch(/error\[BACKUP_TRUNCATED\]/);

    const other = path.join(dir, 'other.key');
    await fs.writeFile(other, Buffer.alloc(32, 7), { mode: 0o600 });
    const w = await verify(saved.file, other);
    expect(w.code).toBe(2);
    expect(w.stderr).toMatch(/error\[BACKUP_WRONG_KEY\]/);

    const foreign = path.join(dir, 'foreign.fbak');
    await fs.writeFile(foreign, 'not a backup at all\n');
    const f = await verify(foreign);
    expect(f.code).toBe(5);
    expect(f.stderr).toMatch(/error\[BACKUP_NOT_FERRY\]/);

    const none = await verify(saved.file, path.join(dir, 'absent.key'));
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/error\[BACKUP_KEY_MISSING\]/);
  });

  it('a save with small chunks reads back through many frames, and a cut exactly at a frame boundary is still refused', async () => {
    const dir = await tmpdir('ferry-backup-chunks-');
    const r = await saveBackup({ host, endpoint: etcd.endpoint, out: path.join(dir, 'small.fbak'), chunkBytes: 4096 });
    const o = await openBackup(r.file, key);
    expect(o.manifest.snapshot.bytes).toBe(r.snapshotBytes);
    // Frames are 4 + 4096 + 16 bytes until the last: cut after the first 100 whole frames.
    const { bodyOffset } = await readBackupHeader(r.file);
    await fs.truncate(r.file, bodyOffset + 100 * (4 + 4096 + 16));
    await expect(openBackup(r.file, key)).rejects.toMatchObject({ code: 'BACKUP_TRUNCATED' });
  }, 120_000);

  it.skipIf(!ETCDUTL)(`restoreSnapshot makes a new member with a new name and peer URL that holds the data as of the backup${ETCDUTL ? '' : ' (skipped: no etcdutl; set FERRY_ETCDUTL)'}`, async () => {
    // A write after the backup: the restored member must not have it.
    await etcdPut(pki.tls, etcd.endpoint, '/registry/after-backup', 'later');
    const dataDir = path.join(root, 'restored-data');
    const peerPort = await freePort();
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const run = (args: string[]) =>
      new Promise<{ code: number; stderr: string }>((resolve) => {
        const p = spawn(ETCDUTL!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        p.on('exit', (code) => resolve({ code: code ?? 1, stderr }));
      });
    const r = await restoreSnapshot({ file: saved.file, key, dataDir, name: 'restored', peerUrl, etcdutl: run });
    console.log(`restoreSnapshot: ${r.snapshotBytes} bytes in ${r.seconds.toFixed(2)}s`);
    expect(r.header.node).toBe(NODE);
    // No decrypted snapshot is left behind beside the data directory.
    expect((await fs.readdir(root)).filter((n) => n.startsWith('.ferry-restore-'))).toEqual([]);
    const back = await startEtcd(ETCD!, pki, { name: 'restored', dataDir, peerPort, existing: true });
    stops.push(() => back.stop());
    expect(await etcdGet(pki.tls, back.endpoint, '/registry/sentinel')).toBe(SENTINEL);
    expect(await etcdGet(pki.tls, back.endpoint, '/registry/bulk/383')).toHaveLength(16 * 1024);
    expect(await etcdGet(pki.tls, back.endpoint, '/registry/after-backup')).toBeUndefined();
    const members = await memberList(pki.tls, back.endpoint);
    expect(members.map((m) => ({ name: m.name, peerURLs: m.peerURLs }))).toEqual([{ name: 'restored', peerURLs: [peerUrl] }]);
    // It takes writes: a cluster of its own, not waiting for the old members.
    await etcdPut(pki.tls, back.endpoint, '/registry/after-restore', 'yes');
    expect(await etcdGet(pki.tls, back.endpoint, '/registry/after-restore')).toBe('yes');
    // And a second restore into the same, now full, directory is refused.
    await expect(restoreSnapshot({ file: saved.file, key, dataDir, name: 'restored', peerUrl, etcdutl: run })).rejects.toMatchObject({ code: 'RESTORE_FAILED' });
  }, 180_000);

  it.skipIf(!ETCDUTL)('restoreSnapshot on a node: etcdutl run by ctr from an etcd image in a real containerd, the data directory bound in', async (ctx) => {
    if (!(await which('containerd')) || !(await which('runc'))) ctx.skip();
    const ctd = await startContainerd();
    stops.push(() => ctd.stop());
    // An image like the site's etcd image: etcdutl at the path upstream's has it.
    const layoutDir = await tmpdir('ferry-backup-image-');
    const store = await Layout.open(layoutDir);
    const size = (await fs.stat(ETCDUTL!)).size;
    const layer = await writeLayer(store, [{ name: IMAGE_ETCDUTL.slice(1), mode: 0o755, size, data: { file: ETCDUTL!, size } }]);
    const { platform: _p, ...img } = await writeImage(store, { platform: 'linux/amd64', layers: [layer], entrypoint: ['/usr/local/bin/etcd'] });
    const image = 'registry.k8s.io/etcd:3.7.0-0';
    await store.addRefs([{ name: image, descriptor: img }]);
    const tar = path.join(await tmpdir('ferry-backup-imgtar-'), 'etcd.tar');
    await execFileP('tar', ['-C', layoutDir, '-cf', tar, '.']);
    await ctd.ctr(['-n', 'k8s.io', 'images', 'import', tar], { timeout: 120_000 });

    const base = await tmpdir('ferry-backup-varlib-');
    const dataDir = path.join(base, 'etcd');
    const peerPort = await freePort();
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const seen: string[][] = [];
    const r = await restoreSnapshot({
      file: saved.file,
      key,
      dataDir,
      name: 'on-node',
      peerUrl,
      etcdutl: (args) => {
        const full = etcdutlCtrArgs({ image, dir: base, id: `ferry-restore-${process.pid}` }, args);
        seen.push(full);
        return execFileP('ctr', ['-a', ctd.sock, ...full], { timeout: 120_000 }).then(() => ({ code: 0, stderr: '' }), (e: { code?: number; stderr?: string }) => ({ code: e.code ?? 1, stderr: e.stderr ?? '' }));
      },
    });
    expect(seen[0]!.slice(0, 5)).toEqual(['-n', 'k8s.io', 'run', '--rm', '--mount']);
    expect(r.snapshotBytes).toBe(saved.snapshotBytes);
    // The container is gone, the decrypted snapshot too; the data directory is a member's.
    expect(await ctd.ctr(['-n', 'k8s.io', 'containers', 'ls', '-q'])).toBe('');
    expect((await fs.readdir(base)).sort()).toEqual(['etcd']);
    const back = await startEtcd(ETCD!, pki, { name: 'on-node', dataDir, peerPort, existing: true });
    stops.push(() => back.stop());
    expect(await etcdGet(pki.tls, back.endpoint, '/registry/sentinel')).toBe(SENTINEL);
    expect((await memberList(pki.tls, back.endpoint)).map((m) => m.name)).toEqual(['on-node']);
  }, 240_000);

  it('restoreFiles puts the PKI and state back on a new host with their modes', async () => {
    const fresh = new Host(await tmpdir('ferry-backup-newhost-'));
    const wrote = await restoreFiles({ file: saved.file, key, host: fresh, want: (p) => p.startsWith('/etc/') });
    expect(wrote).toEqual(expect.arrayContaining(['/etc/kubernetes/pki/ca.key', '/etc/ferry/pki/ca.key', '/etc/kubernetes/pki/etcd/healthcheck-client.key']));
    expect(wrote).not.toContain('/var/lib/ferry/site/state.json');
    expect(await fresh.read('/etc/ferry/pki/ca.key')).toBe(SITE_CA_KEY);
    expect(((await fs.stat(fresh.p('/etc/ferry/pki/ca.key'))).mode & 0o777).toString(8)).toBe('600');
  });

  it('list shows backups newest first beside the pre-upgrade snapshots; prune keeps N, asks first, and removes only what it can prove is its own', async () => {
    const dir = host.p(BACKUP_DIR);
    // Three more, an hour apart in name and header, and an upgrade's snapshot.
    const made: string[] = [];
    for (const h of [1, 2, 3]) made.push((await saveBackup({ host, endpoint: etcd.endpoint, now: new Date(Date.UTC(2026, 0, 1, h)) })).file);
    await fs.writeFile(path.join(dir, 'pre-upgrade-k8s-1-to-k8s-2.db'), 'snapshot');
    // A file with a backup's name that ferry did not write, and one with another name.
    const impostor = path.join(dir, backupFileName(new Date(Date.UTC(2025, 0, 1)), NODE));
    await fs.writeFile(impostor, 'someone else\'s file');
    await fs.writeFile(path.join(dir, 'notes.txt'), 'keep me');

    const l = await ferry(['backup', 'list', '--root', root, '--json']);
    expect(l.code).toBe(0);
    const rows = json(l.stdout).backups as { name: string; kind: string; header?: { created: string }; problem?: string }[];
    expect(rows.map((r) => r.kind).sort()).toEqual(['backup', 'backup', 'backup', 'backup', 'backup', 'pre-upgrade']);
    // Newest first: by the time in a backup's name, a snapshot's mtime (just now).
    expect(rows.map((r) => r.name)).toEqual(['pre-upgrade-k8s-1-to-k8s-2.db', saved.file, made[2], made[1], made[0], impostor].map((f) => path.basename(f!)));
    expect(rows.find((r) => r.name === path.basename(impostor))?.problem).toMatch(/not a ferry backup/);
    expect(rows.some((r) => r.name === 'notes.txt')).toBe(false);

    // No TTY and no --yes: refused, nothing removed.
    const asked = await ferry(['backup', 'prune', '--keep', '2', '--root', root]);
    expect(asked.code).not.toBe(0);
    expect((await listBackups(dir)).length).toBe(6);

    const dry = await ferry(['backup', 'prune', '--keep', '2', '--root', root, '--dry-run', '--json']);
    expect(json(dry.stdout).removed).toEqual([made[1], made[0]]);

    const p = await ferry(['backup', 'prune', '--keep', '2', '--yes', '--root', root, '--json']);
    expect(p.code).toBe(0);
    expect(json(p.stdout).removed).toEqual([made[1], made[0]]);
    expect((await fs.readdir(dir)).sort()).toEqual([path.basename(saved.file), path.basename(made[2]!), path.basename(impostor), 'notes.txt', 'pre-upgrade-k8s-1-to-k8s-2.db'].sort());
    // The newest two are whole.
    await openBackup(saved.file, key);
    await openBackup(made[2]!, key);
  }, 180_000);

  it('a save with etcd down fails with BACKUP_FAILED and leaves no file behind', async () => {
    const before = (await fs.readdir(host.p(BACKUP_DIR))).sort();
    const r = await ferry(['backup', 'save', '--local', '--root', root, '--etcd', `127.0.0.1:${await freePort()}`]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/error\[BACKUP_FAILED\]/);
    expect((await fs.readdir(host.p(BACKUP_DIR))).sort()).toEqual(before);
  });
});
