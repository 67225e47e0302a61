/**
 * The site in a box: real Kubernetes from a signed ferry bundle, on namespace hosts of this machine.
 *   npm run site -- up [--servers N] [--agents M] [--domain D] [--release current|previous] [--version V] [--json]
 *   npm run site -- down
 *   npm run site -- status [--json]
 *   npm run site -- exec NAME -- CMD…
 *   npm run site -- kill NAME      (a power cut: every process SIGKILLed, bridge port down)
 *   npm run site -- start NAME     (boots it again from its disk; its units and kubelet come back)
 *   npm run site -- add NAME --role server|agent [--json]   (a fresh host, not joined)
 *   npm run site -- join NAME --from HOST [--json]          (ferry join, typed on HOST)
 *   npm run site -- bundle [--release current|previous] [--since /srv/BASE.tar] [--version V]
 *                          [--relabel-kubernetes K] --out NAME [--json]  (another signed bundle, in /srv)
 *   npm run site -- help | --help
 * `up` builds (or reuses) the upstream components (the first run builds them from source: tens of
 * minutes on 2 cores; cached in ~/.cache/ferry-site after that), builds the signed bundle from
 * bundle-spec/kubernetes.yaml through loopback mirrors, creates the hosts and runs the bundle's own
 * install.sh on the first server. See README "The site in a box".
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { bootstrapScript } from '../../src/bundle/format.js';
import { buildFileTree, buildImages, pushImages, run, serveFiles, startRegistry } from './content.js';
import { built, CACHE, RELEASES, ROOT, SITE_SCRIPTS, STATE_FILE, versions, WORK, type Release } from './config.js';
import { previousBootstrapValues, previousSpec } from './release.js';
import { loadState, saveState, type SiteState } from './state.js';
import { createBridge, createHost, deleteBridge, hostExec, isUp, killHost, onHost, removeHost, removeStray, startResolver, startSshd, stopResolver, unmountStray, type HostSpec, type HostState } from './hosts.js';

const SITE = 'ferry-site';
/** The site's internal resolver and the corporate zone it answers (see startResolver). */
const CORP = { zone: 'corp.test', records: { 'intranet.corp.test': '10.231.0.99' } };
const SPEC = path.join(ROOT, 'bundle-spec/kubernetes.yaml');

interface Args {
  cmd: string;
  servers: number;
  agents: number;
  domain: string;
  subnet: string;
  json: boolean;
  role?: 'server' | 'agent';
  from?: string;
  version?: string;
  out?: string;
  relabel?: string;
  release?: Release;
  since?: string;
  rest: string[];
}

function parseArgs(argv: string[]): Args {
  // --help anywhere before `--` is a question, never a run (`up --help` must not bring a site up).
  const asked = argv.slice(0, argv.includes('--') ? argv.indexOf('--') : argv.length).some((f) => f === '--help' || f === '-h');
  const a: Args = { cmd: asked || argv[0] === undefined ? 'help' : argv[0], servers: 1, agents: 0, domain: 'site.test', subnet: '10.231.0', json: false, rest: [] };
  for (let i = 1; i < argv.length; i++) {
    const f = argv[i]!;
    const val = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${f} needs a value`);
      return v!;
    };
    if (f === '--servers') a.servers = Number(val());
    else if (f === '--agents') a.agents = Number(val());
    else if (f === '--domain') a.domain = val();
    else if (f === '--subnet') a.subnet = val().replace(/\.0\/24$/, '');
    else if (f === '--json') a.json = true;
    else if (f === '--role') {
      const r = val();
      if (r !== 'server' && r !== 'agent') usage('--role takes server or agent');
      a.role = r;
    } else if (f === '--from') a.from = val();
    else if (f === '--version') a.version = val();
    else if (f === '--out') a.out = val();
    else if (f === '--relabel-kubernetes') a.relabel = val();
    else if (f === '--release') {
      const r = val();
      if (!RELEASES.includes(r as Release)) usage(`--release takes ${RELEASES.join(' or ')}`);
      a.release = r as Release;
    } else if (f === '--since') a.since = val();
    else if (f === '--') {
      a.rest.push(...argv.slice(i + 1));
      break;
    } else a.rest.push(f);
  }
  if (!Number.isInteger(a.servers) || a.servers < 1 || a.servers > 5) usage('--servers takes 1 to 5');
  if (!Number.isInteger(a.agents) || a.agents < 0 || a.agents > 5) usage('--agents takes 0 to 5');
  return a;
}

/** The help is this file's opening comment; asked for, it goes to stdout with exit 0, after a mistake to stderr with exit 2. */
function usage(msg?: string): never {
  const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n');
  const help = `${lines.slice(1, lines.indexOf(' */')).join('\n').replace(/^ \* ?/gm, '')}\n`;
  if (msg) process.stderr.write(`error[SITE_USAGE]: ${msg}\n${help}`);
  else process.stdout.write(help);
  process.exit(msg ? 2 : 0);
}

let quiet = false;
const say = (s: string) => {
  if (!quiet) process.stderr.write(`site: ${s}\n`);
};

async function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => r(p));
    });
  });
}

/** Runs bin/ferry on this machine (the connected side). */
function ferry(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  say(`$ ferry ${args.join(' ')}`);
  return run(process.execPath, [path.join(ROOT, 'bin/ferry'), ...args], { env: { ...process.env, ...env } });
}

/** Builds (or finds in the cache) what a release needs: the shared components and its own. */
async function buildComponents(release: Release): Promise<void> {
  const t0 = Date.now();
  await new Promise<void>((resolve, reject) => {
    const c = spawn('sh', [path.join(SITE_SCRIPTS, 'build-components.sh'), 'shared', release], { stdio: ['ignore', quiet ? 'ignore' : 'inherit', 'inherit'] });
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`build-components.sh failed (${code})`))));
  });
  say(`components ready in ${((Date.now() - t0) / 1000).toFixed(0)} s (cache ${CACHE})`);
}

/** The site's signing key pair, made once per site. */
async function siteKeys(work: string): Promise<{ key: string; pub: string }> {
  const dir = path.join(work, 'keys');
  if (!existsSync(path.join(dir, 'ferry.key'))) await ferry(['key', 'generate', '--out', dir]);
  return { key: path.join(dir, 'ferry.key'), pub: path.join(dir, 'ferry.pub') };
}

/**
 * Builds a signed bundle of `spec` with the site's key through loopback mirrors (the images under
 * their upstream names, the binaries where their download sites keep them), from the components of
 * `release`. With `since` (a local bundle file) it is a delta on that base, and with `fullOut` the
 * full bundle is built there too, to compare sizes.
 */
async function buildBundle(
  work: string,
  spec: string,
  out: string,
  o: { release: Release; relabel?: { from: string; to: string }; since?: string; fullOut?: string },
): Promise<{ bundle: string; pub: string }> {
  const { relabel } = o;
  const v = versions(o.release);
  const { dir: layout, refs } = await buildImages(v, say);
  const reg = await startRegistry(path.join(work, 'registry'), await freePort());
  const files = path.join(work, 'files');
  await buildFileTree(v, files, path.join(built('helm', v.HELM), 'helm'), say);
  const fs_ = await serveFiles(files, v);
  try {
    say(`pushing ${refs.length} images to ${reg.host} under their upstream names`);
    await pushImages(layout, refs, reg.host);
    if (relabel) {
      // The control-plane images of this site's release, tagged as another release's.
      for (const ref of refs.filter((r) => /\/kube-(apiserver|controller-manager|scheduler|proxy):/.test(r))) {
        await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:${ref}`, `docker://${reg.host}/${ref.replace(`:${relabel.from}`, `:${relabel.to}`)}`]);
      }
    }
    const mirrors = ['registry.k8s.io', 'ghcr.io', 'docker.io'].flatMap((r) => ['--registry-mirror', `${r}=http://${reg.host}/${r}`]);
    const binMirrors = ['https://dl.k8s.io', 'https://github.com', 'https://get.helm.sh', 'https://flannel-io.github.io'].flatMap((u) => ['--binary-mirror', `${u}=${fs_.url}/${u.slice(8)}`]);
    const lock = path.join(path.dirname(out), `${path.basename(out)}.images.lock`);
    // helm renders the charts for the image check: values.yaml alone lists images a chart never uses.
    const env = { FERRY_NPM_REGISTRY: fs_.npm, FERRY_HELM: path.join(built('helm', v.HELM), 'helm') };
    const { key, pub } = await siteKeys(work);
    await ferry(['lock', spec, '--lock', lock, '--platform', 'linux/amd64', ...mirrors], env);
    const build = async (file: string, since?: string) => {
      const t0 = Date.now();
      await ferry(['bundle', 'build', spec, '--lock', lock, '--key', key, '--out', file, '--platform', 'linux/amd64', ...mirrors, ...binMirrors, ...(since ? ['--since', since] : []), '--quiet'], env);
      say(`bundle built in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${file}`);
    };
    if (o.fullOut) await build(o.fullOut);
    await build(out, o.since);
    return { bundle: out, pub };
  } finally {
    await fs_.close();
    await reg.stop();
  }
}

/**
 * The default spec at `release` (the previous one: see release.ts), with another metadata.version
 * (and, relabelled, another Kubernetes version), written into the work dir; its charts/ (the spec's
 * relative chart paths) links to the checkout's, or at the previous release is a copy with that
 * release's CoreDNS in ferry-bootstrap's values. The default spec itself when nothing changes.
 */
async function specCopy(
  work: string,
  o: { release: Release; version?: string; kubernetes?: string },
): Promise<{ spec: string; version: string; relabel?: { from: string; to: string } }> {
  const text = await fs.readFile(SPEC, 'utf8');
  if (o.release === 'current' && !o.version && !o.kubernetes) return { spec: SPEC, version: String(parseDocument(text).getIn(['metadata', 'version'])) };
  const dir = path.join(work, `spec-${o.release}-${o.version ?? ''}-${o.kubernetes ?? ''}`);
  await fs.mkdir(dir, { recursive: true });
  const doc = parseDocument(o.release === 'previous' ? previousSpec(text, versions('current'), versions('previous'), o.version).text : text);
  if (o.version) doc.setIn(['metadata', 'version'], o.version);
  let relabel: { from: string; to: string } | undefined;
  if (o.kubernetes) {
    const from = String(doc.getIn(['spec', 'kubernetes', 'version']));
    relabel = { from, to: o.kubernetes };
    doc.setIn(['spec', 'kubernetes', 'version'], o.kubernetes);
    doc.setIn(['metadata', 'description'], `Kubernetes ${from} of the site in a box, relabelled as ${o.kubernetes}: not for installing`);
    const images = (doc.getIn(['spec', 'images']) as { items: { value: unknown }[] }).items;
    for (const it of images) if (typeof it.value === 'string' && /\/kube-[a-z-]+:/.test(it.value)) it.value = it.value.replace(`:${from}`, `:${o.kubernetes}`);
  }
  await fs.writeFile(path.join(dir, 'kubernetes.yaml'), doc.toString());
  await fs.rm(path.join(dir, 'charts'), { recursive: true, force: true });
  if (o.release === 'previous') {
    // The checkout's charts, ferry-bootstrap copied with the previous release's CoreDNS as its default.
    const charts = path.join(dir, 'charts');
    await fs.cp(path.join(ROOT, 'charts'), charts, { recursive: true });
    const values = path.join(charts, 'ferry-bootstrap/values.yaml');
    await fs.writeFile(values, previousBootstrapValues(await fs.readFile(values, 'utf8'), versions('current'), versions('previous')));
  } else await fs.symlink(path.join(ROOT, 'charts'), path.join(dir, 'charts'));
  return { spec: path.join(dir, 'kubernetes.yaml'), version: String(doc.getIn(['metadata', 'version'])), relabel };
}

/** Puts a file into a host's /srv (its disk directory, so a host that is down gets it too). */
async function toSrv(h: HostState, file: string, name = path.basename(file)): Promise<void> {
  const dest = path.join(h.dir, 'disk/srv', name);
  await fs.mkdir(path.dirname(dest), { recursive: true });
  await fs.rm(dest, { force: true });
  await fs.link(file, dest).catch(() => fs.copyFile(file, dest));
}

async function toEveryServer(s: SiteState, file: string, name = path.basename(file)): Promise<void> {
  for (const h of s.hosts.filter((x) => x.role === 'server')) await toSrv(h, file, name);
}

/** Writes a file on a host: through the host when it runs, into its root's upper layer when it is down. */
async function writeOnHost(h: HostState, file: string, content: string, mode: number, append = false): Promise<void> {
  if (isUp(h)) {
    const dir = path.posix.dirname(file);
    const r = await hostExec(h, ['sh', '-c', `mkdir -p -m 700 ${dir} && cat ${append ? '>>' : '>'} ${file} && chmod ${mode.toString(8)} ${file}`], content);
    if (r.code !== 0) throw new Error(`writing ${file} on ${h.name}: ${r.stderr}`);
    return;
  }
  const dest = path.join(h.dir, 't/upper', file);
  await fs.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
  await (append ? fs.appendFile(dest, content) : fs.writeFile(dest, content));
  await fs.chmod(dest, mode);
}

/** A host's line for known_hosts (its ed25519 host key; read from its root's upper layer when it is down). */
async function knownHostLine(h: HostState): Promise<string> {
  const file = '/etc/ssh/ssh_host_ed25519_key.pub';
  const k = isUp(h) ? (await hostExec(h, ['cat', file])).stdout : await fs.readFile(path.join(h.dir, 't/upper', file), 'utf8');
  if (!k.trim()) throw new Error(`${h.name} has no ${file}`);
  return `${h.ip} ${k.trim().split(' ').slice(0, 2).join(' ')}`;
}

/**
 * Every server gets the site's SSH identity and every host's key in known_hosts, so that a join can
 * run from any server, as it can on a real site whose operator keeps one key.
 */
async function trustEveryHost(s: SiteState, key: string): Promise<void> {
  const known = `${(await Promise.all(s.hosts.map(knownHostLine))).join('\n')}\n`;
  const id = await fs.readFile(key, 'utf8');
  for (const h of s.hosts.filter((x) => x.role === 'server')) {
    await writeOnHost(h, '/root/.ssh/id_ed25519', id, 0o600);
    await writeOnHost(h, '/root/.ssh/known_hosts', known, 0o644);
  }
}

function answersFor(s: SiteState, h: HostState): string {
  return [
    'apiVersion: ferry.dev/v1alpha1',
    'kind: InstallAnswers',
    `domain: ${s.domain}`,
    `node: {name: ${h.name}, ip: ${h.ip}}`,
    'podCidr: 10.244.0.0/16',
    'serviceCidr: 10.96.0.0/12',
    'cni: flannel',
    // No upstreamDns: names outside the site domain go to the resolver the first server had (the
    // site's internal one), as ferry captures it.
    // A network namespace cannot set nf_conntrack_max: kube-proxy must leave it alone.
    'patches:',
    '  kubeProxy: {conntrack: {maxPerCore: 0}}',
    // The hosts share this machine's disk, which the tests' own builds fill: its free share must not
    // taint the nodes with disk-pressure (at 14% free every node was tainted and nothing scheduled).
    '  kubelet: {evictionHard: {memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}, imageGCHighThresholdPercent: 99, imageGCLowThresholdPercent: 98}',
    // With no agents the servers run the workloads: no control-plane taint.
    ...(s.hosts.some((x) => x.role === 'agent') ? [] : ['  initConfiguration: {nodeRegistration: {taints: []}}']),
    // The other hosts, joined from this one over SSH with the site key, host keys checked.
    'ssh: {user: root, identityFile: /root/.ssh/id_ed25519, knownHosts: /root/.ssh/known_hosts}',
    ...(s.hosts.length > 1 ? ['join:', ...s.hosts.filter((x) => x !== h).map((x) => `  - {host: ${x.ip}, name: ${x.name}, role: ${x.role}}`)] : []),
    '',
  ].join('\n');
}

/** Runs a shell command on a host, its output streamed (or, with --json, shown only if it fails). */
function runOnHost(h: HostState, script: string): Promise<number> {
  return new Promise((resolve) => {
    const c = onHost(h, ['sh', '-c', script], { stdio: quiet ? 'pipe' : 'inherit' });
    let tail = '';
    const keep = (d: Buffer) => (tail = (tail + d).slice(-4000));
    c.stderr?.on('data', keep);
    c.stdout?.on('data', keep);
    c.on('close', (code) => {
      if (code !== 0 && quiet) process.stderr.write(tail);
      resolve(code ?? 1);
    });
  });
}

/** Checks the bootstrap with the host's own openssl and sha256sum, then runs the bundle's install.sh, streaming its output. */
async function install(s: SiteState, h: HostState, pub: string): Promise<void> {
  const srv = path.join(h.dir, 'disk/srv');
  const name = path.basename(s.bundle);
  // The bundle and its key stay in /srv on every server: a join of a server, from any server, needs them.
  await toEveryServer(s, s.bundle);
  await toEveryServer(s, pub, 'ferry.pub');
  await fs.writeFile(path.join(srv, 'answers.yaml'), answersFor(s, h));
  const arch = process.arch === 'arm64' ? 'arm64' : 'amd64';
  const script = `cd /srv && ${bootstrapScript(name, `linux/${arch}`, { installArgs: ['--answers', 'answers.yaml'] })}`;
  say(`${h.name}: ${script}`);
  const t0 = Date.now();
  const code = await runOnHost(h, script);
  if (code !== 0) throw new Error(`ferry install failed on ${h.name} (exit ${code}); logs: ${path.join(h.dir, 'disk/var/log/ferry')}`);
  say(`${h.name}: installed in ${((Date.now() - t0) / 1000).toFixed(0)} s; peak memory of the host ${peakMiB(h)} MiB`);
}

/** The host's peak memory (its memory cgroup, page cache included), for the operator's sizing. */
function peakMiB(h: HostState): string {
  let now = 0;
  try {
    now = Number(readFileSync(`/sys/fs/cgroup/memory/${h.cgroup}/memory.max_usage_in_bytes`, 'utf8')) / 2 ** 20;
  } catch {
    /* killed: its cgroup is gone, the peak before the kill was kept */
  }
  const peak = Math.max(now, h.peakMiB ?? 0);
  return peak ? peak.toFixed(0) : '?';
}

/** `ferry join` on the first server for every other host (the site key and known host keys are there). */
async function join(s: SiteState): Promise<void> {
  const [first, ...rest] = s.hosts as [HostState, ...HostState[]];
  const cmd = `/var/lib/ferry/runtime/node /var/lib/ferry/ferry/ferry.mjs join --answers /srv/answers.yaml --bundle /srv/${path.basename(s.bundle)}`;
  say(`${first.name}: ${cmd}`);
  const t0 = Date.now();
  const code = await runOnHost(first, cmd);
  if (code !== 0) throw new Error(`ferry join failed (exit ${code}); logs under each host's /var/log/ferry`);
  say(`joined ${rest.map((h) => h.name).join(', ')} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

/** A fresh host on the bridge: sshd with the site key, the site's resolver, nothing of ferry. */
async function newHost(s: SiteState, spec: HostSpec, pubKey: string): Promise<HostState> {
  say(`creating host ${spec.name} (${spec.ip})`);
  const h = await createHost(SITE, WORK, s.net, spec);
  s.hosts.push(h);
  await saveState(s);
  await startSshd(h, pubKey);
  // What the node's resolver had before ferry: the internal resolver and its search domain.
  await hostExec(h, ['sh', '-c', 'cat > /etc/resolv.conf'], `search ${CORP.zone}\nnameserver ${s.resolver!.ip}\n`);
  return h;
}

/** The next free address of a role's range (servers from .11, agents from .21). */
function nextIp(s: SiteState, role: 'server' | 'agent'): string {
  const prefix = s.net.subnet.replace(/\.0\/24$/, '');
  const used = new Set(s.hosts.map((h) => h.ip));
  for (let i = role === 'server' ? 11 : 21; i < (role === 'server' ? 21 : 31); i++) if (!used.has(`${prefix}.${i}`)) return `${prefix}.${i}`;
  throw new Error(`no free ${role} address left in ${s.net.subnet}`);
}

/** `site add`: a fresh host, not joined; every server trusts its host key. */
async function add(s: SiteState, name: string, role: 'server' | 'agent'): Promise<HostState> {
  if (!/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(name)) throw new Error(`${name} is not a host name (lowercase letters, digits and -)`);
  if (s.hosts.some((h) => h.name === name)) throw new Error(`the site has a host ${name} already`);
  const key = path.join(WORK, 'ssh/id_ed25519');
  const h = await newHost(s, { name, ip: nextIp(s, role), role }, await fs.readFile(`${key}.pub`, 'utf8'));
  // Its key joins every server's known_hosts; a new server also gets the identity and every key.
  const line = `${await knownHostLine(h)}\n`;
  for (const x of s.hosts.filter((y) => y.role === 'server' && y !== h)) await writeOnHost(x, '/root/.ssh/known_hosts', line, 0o644, true);
  if (role === 'server') {
    await writeOnHost(h, '/root/.ssh/id_ed25519', await fs.readFile(key, 'utf8'), 0o600);
    await writeOnHost(h, '/root/.ssh/known_hosts', `${(await Promise.all(s.hosts.map(knownHostLine))).join('\n')}\n`, 0o644);
    await toSrv(h, s.bundle);
    await toSrv(h, path.join(WORK, 'keys/ferry.pub'));
  }
  return h;
}

/**
 * `site join NAME --from HOST`: ferry's own join, typed on HOST as an operator would type it there.
 * Resolves to the command's exit code and output (its --json document on stdout).
 */
async function joinFrom(s: SiteState, name: string, from: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const h = s.hosts.find((x) => x.name === name);
  const f = s.hosts.find((x) => x.name === from);
  if (!h) throw new Error(`the site has no host ${name}; add it first: npm run site -- add ${name} --role agent`);
  if (!f || f.role !== 'server') throw new Error(`${from} is not a server of the site`);
  if (!isUp(f)) throw new Error(`${from} is down; start it or join from another server`);
  const args = ['join', h.ip, '--name', h.name, '--role', h.role, '--json', ...(h.role === 'server' ? ['--bundle', `/srv/${path.basename(s.bundle)}`] : [])];
  // As an operator types it there: the launcher ferry puts on every node's PATH.
  const cmd = 'exec ferry "$@"';
  say(`${f.name}: ferry ${args.join(' ')}`);
  const t0 = Date.now();
  const r = await hostExec(f, ['sh', '-c', cmd, 'ferry', ...args]);
  say(`${f.name}: ferry join ${name} exited ${r.code} after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return r;
}

/**
 * `site bundle`: another signed bundle of the default spec at `release` (default the current one),
 * in /srv of every server. With `since` (a bundle in a server's /srv, such as the one the site was
 * installed from) it is a delta on that base, and the full bundle is built too (kept in the work
 * dir, not in /srv) so that its size can be compared. With `relabel`, its spec names another
 * Kubernetes release whose control-plane images are this site's build retagged (binaries
 * unchanged): a bundle that claims another release without building one, for the checks that
 * refuse it before anything runs (`ferry install`'s version guard). Never for installing.
 */
async function bundle(
  s: SiteState,
  out: string,
  o: { version?: string; kubernetes?: string; release?: Release; since?: string },
): Promise<{ bundle: string; bytes: number; base?: string; fullBytes?: number }> {
  if (path.basename(out) !== out || !out.endsWith('.tar')) throw new Error(`--out takes a file name ending in .tar (it lands in /srv), not ${out}`);
  const release = o.release ?? 'current';
  let base: string | undefined;
  if (o.since) {
    // A server's /srv is its disk directory here: the same file the server holds.
    const m = /^\/srv\/([^/]+)$/.exec(o.since);
    const server = s.hosts.find((h) => h.role === 'server');
    base = m && server ? path.join(server.dir, 'disk/srv', m[1]!) : undefined;
    if (!base || !existsSync(base)) throw new Error(`--since takes a bundle in /srv of the servers, such as /srv/${path.basename(s.bundle)}; not ${o.since}`);
  }
  await buildComponents(release);
  const { spec, relabel } = await specCopy(WORK, { release, version: o.version, kubernetes: o.kubernetes });
  const dir = path.join(WORK, 'bundles');
  await fs.mkdir(dir, { recursive: true });
  const fullOut = base ? path.join(dir, out.replace(/\.tar$/, '.full.tar')) : undefined;
  const { bundle: file, pub } = await buildBundle(WORK, spec, path.join(dir, out), { release, relabel, since: base, fullOut });
  await toEveryServer(s, file);
  await toEveryServer(s, pub, 'ferry.pub');
  const bytes = (await fs.stat(file)).size;
  return { bundle: `/srv/${out}`, bytes, ...(base && fullOut ? { base: o.since, fullBytes: (await fs.stat(fullOut)).size } : {}) };
}

async function up(a: Args): Promise<SiteState> {
  if (loadState()) throw new Error(`a site is up (${STATE_FILE}); run: npm run site -- down`);
  const release = a.release ?? 'current';
  await buildComponents(release);
  const work = WORK;
  await fs.mkdir(work, { recursive: true });
  const { spec, version } = await specCopy(work, { release, version: a.version });
  const { bundle, pub } = await buildBundle(work, spec, path.join(work, `kubernetes-${version}.ferry.tar`), { release });
  const n = { bridge: 'fsite0', prefix: 24, subnet: `${a.subnet}.0/24` };
  const specs = [
    ...Array.from({ length: a.servers }, (_, i) => ({ name: `server-${i + 1}`, ip: `${a.subnet}.${11 + i}`, role: 'server' as const })),
    ...Array.from({ length: a.agents }, (_, i) => ({ name: `agent-${i + 1}`, ip: `${a.subnet}.${21 + i}`, role: 'agent' as const })),
  ];
  const s: SiteState = { domain: a.domain, fqdn: `k8s-cluster.${a.domain}`, net: n, bundle, release, hosts: [] };
  await saveState(s);
  createBridge(n);
  s.resolver = await startResolver(n, work, path.join(built('coredns', versions(release).COREDNS), 'coredns'), { ip: `${a.subnet}.2`, ...CORP });
  await saveState(s);
  // One SSH key for the site: each host authorizes it for root, as an operator's hosts would.
  const key = path.join(work, 'ssh/id_ed25519');
  await fs.mkdir(path.dirname(key), { recursive: true });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ferry-site', '-f', key]);
  for (const spec of specs) await newHost(s, spec, await fs.readFile(`${key}.pub`, 'utf8'));
  await trustEveryHost(s, key);
  await install(s, s.hosts[0]!, pub);
  if (s.hosts.length > 1) await join(s);
  return s;
}

async function down(): Promise<void> {
  const s = loadState();
  for (const h of s?.hosts ?? []) {
    say(`removing ${h.name} (its peak memory: ${peakMiB(h)} MiB)`);
    await removeHost(h, s!.net);
  }
  await removeStray(SITE);
  unmountStray(WORK);
  stopResolver(s?.net ?? { bridge: 'fsite0', prefix: 24 }, s?.resolver);
  deleteBridge(s?.net ?? { bridge: 'fsite0', prefix: 24 });
  await fs.rm(WORK, { recursive: true, force: true });
  say('down');
}

function summary(s: SiteState) {
  return { domain: s.domain, fqdn: s.fqdn, hosts: s.hosts.map((h) => ({ name: h.name, ip: h.ip, role: h.role, pid: h.pid, up: isUp(h) })) };
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  quiet = a.json && !process.env.FERRY_SITE_VERBOSE;
  if (a.cmd === 'up') {
    const s = await up(a);
    if (a.json) process.stdout.write(`${JSON.stringify(summary(s))}\n`);
    else say(`up: ${s.hosts.map((h) => `${h.name} ${h.ip} (nsenter -t ${h.pid} -a -r -w …)`).join(', ')}`);
  } else if (a.cmd === 'down') await down();
  else if (a.cmd === 'status') {
    const s = loadState();
    if (!s) throw new Error('no site is up');
    process.stdout.write(a.json ? `${JSON.stringify(summary(s))}\n` : `${s.hosts.map((h) => `${h.name}\t${h.ip}\t${h.role}\t${isUp(h) ? `up, pid ${h.pid}` : 'down'}\tpeak ${peakMiB(h)} MiB`).join('\n')}\n`);
  } else if (a.cmd === 'kill' || a.cmd === 'start') {
    const s = loadState();
    const h = s?.hosts.find((x) => x.name === a.rest[0]);
    if (!s || !h) throw new Error(`the site has no host ${a.rest[0] ?? '(name missing)'}`);
    if (a.cmd === 'kill') {
      h.peakMiB = Number(peakMiB(h)) || undefined;
      await killHost(h, s.net);
      await saveState(s);
      say(`${h.name} killed (power cut): its disk stays; npm run site -- start ${h.name}`);
    } else {
      if (isUp(h)) throw new Error(`${h.name} is running (pid ${h.pid}); kill it first`);
      const t0 = Date.now();
      const b = await createHost(SITE, WORK, s.net, h);
      Object.assign(h, b);
      await saveState(s);
      say(`${h.name} booted in ${((Date.now() - t0) / 1000).toFixed(1)} s (pid ${h.pid}); its units start on their own`);
    }
    if (a.json) process.stdout.write(`${JSON.stringify({ name: h.name, up: isUp(h), pid: h.pid })}\n`);
  } else if (a.cmd === 'add') {
    const s = loadState();
    if (!s) throw new Error('no site is up');
    if (!a.rest[0] || !a.role) usage('add takes NAME --role server|agent');
    const t0 = Date.now();
    const h = await add(s, a.rest[0], a.role);
    say(`${h.name} (${h.ip}, ${h.role}) added in ${((Date.now() - t0) / 1000).toFixed(1)} s, not joined: npm run site -- join ${h.name} --from server-1`);
    if (a.json) process.stdout.write(`${JSON.stringify({ name: h.name, ip: h.ip, role: h.role, pid: h.pid, up: isUp(h) })}\n`);
  } else if (a.cmd === 'join') {
    const s = loadState();
    if (!s) throw new Error('no site is up');
    if (!a.rest[0] || !a.from) usage('join takes NAME --from HOST');
    const r = await joinFrom(s, a.rest[0], a.from);
    // ferry's own output, as the operator sees it; its exit code is the site command's.
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    process.exitCode = r.code;
  } else if (a.cmd === 'bundle') {
    const s = loadState();
    if (!s) throw new Error('no site is up');
    if (!a.out) usage('bundle takes --out NAME');
    const b = await bundle(s, a.out, { version: a.version, kubernetes: a.relabel, release: a.release, since: a.since });
    if (a.json) process.stdout.write(`${JSON.stringify(b)}\n`);
    else say(`${b.bundle} (${b.bytes} bytes) on every server, beside /srv/ferry.pub`);
    if (b.fullBytes) say(`a delta on ${b.base}: ${b.bytes} bytes, ${((100 * b.bytes) / b.fullBytes).toFixed(1)} % of the full bundle's ${b.fullBytes}`);
  } else if (a.cmd === 'exec') {
    const s = loadState();
    const h = s?.hosts.find((x) => x.name === a.rest[0]);
    if (!h) throw new Error(`no host ${a.rest[0]} is up`);
    const r = await hostExec(h, a.rest.slice(1));
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    process.exitCode = r.code;
  } else usage(a.cmd === 'help' ? undefined : `unknown command ${a.cmd}`);
}

main().catch((e: Error) => {
  process.stderr.write(`error[SITE_FAILED]: ${e.message}\n  hint: fix the cause, then run: npm run site -- down && npm run site -- up\n`);
  process.exit(1);
});
