import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { c as tarCreate } from 'tar';
import { FERRY_VERSION, TABLE } from '../bundle/format.js';
import type { NodeRecord, SiteState } from '../cluster/state.js';
import { Codes, HostError } from '../errors.js';
import type { Host } from '../install/host.js';
import { ADMIN_CONF, ANSWERS_FILE, BUNDLE_DIR, CONTAINERD_CONFIG, ETC_HOSTS, FERRY_ROOT, JOIN_CONFIG, KUBEADM_CONFIG, LOG_DIR, RESOLV_CONF, STATE_DIR, STATE_MIRROR, STORE_DIR } from '../install/paths.js';
import { redactStream, Redactor } from '../util/redact.js';
import { shQuote as sq } from '../util/shell.js';
import { selfOf } from './certs-renew.js';
import { endpointStatus, etcdTls, memberIp, memberList } from './etcd.js';
import { addressOf, connectNode, type SshSettings } from './remote.js';
import { bounded, parseHaproxyCsv } from './status.js';

/*
 * `ferry support-bundle`: what a site's operator sends to whoever helps, in one .tar.gz. Every byte
 * collected passes through the redactor before it touches the disk, and each node's files come as
 * one stream (a shell script's sections, here or over SSH), so nothing is held whole in memory.
 */

/** Journals collected from every node, bounded in lines and time. */
export const JOURNAL_UNITS = ['kubelet', 'containerd', 'ferry-serve', 'ferry-certs', 'ferry-state-mirror'];
export const JOURNAL_LINES = 5000;
export const JOURNAL_SINCE = '24 hours ago';
/** A log file is cut to its last bytes beyond this. */
export const FILE_TAIL_BYTES = 20 << 20;
/** Where df reads disk use. */
const DISK_DIRS = [FERRY_ROOT, '/var/lib/containerd', '/var/lib/etcd'];
/** One file of a node's configuration each, where present. */
const NODE_FILES = [STATE_MIRROR, ANSWERS_FILE, KUBEADM_CONFIG, JOIN_CONFIG, `${BUNDLE_DIR}/${TABLE[0]}`, `${STORE_DIR}/current`, CONTAINERD_CONFIG, RESOLV_CONF, ETC_HOSTS];
/** Marks the start of a section in a collection script's output: the ASCII record separator, then its path. */
const SECTION = '\x1eferry-section ';

/**
 * The script a node runs (as root, under `root` in tests): its sections are the node's files in the
 * bundle. Every command is bounded; a missing file or command is a line saying so, never a stop.
 */
export function collectScript(root = '/'): string {
  const r = (p: string) => sq(path.posix.join(root, p));
  const sec = (name: string) => `sec ${sq(name)}`;
  const lines = [
    `sec() { printf '${SECTION.replace('\x1e', '\\036')}%s\\n' "$1"; }`,
    `R=${sq(root.replace(/\/+$/, ''))}`,
    // ferry's logs and step markers, each file cut to its last bytes.
    ...[LOG_DIR, STATE_DIR].map(
      (d) => `[ -d ${r(d)} ] && find ${r(d)} -type f 2>/dev/null | sort | while IFS= read -r f; do sec "files\${f#"$R"}"; tail -c ${FILE_TAIL_BYTES} "$f"; echo; done`,
    ),
    ...NODE_FILES.map((f) => `[ -f ${r(f)} ] && { ${sec(`files${f}`)}; tail -c ${FILE_TAIL_BYTES} ${r(f)}; echo; }`),
    // The kubeconfigs show which API endpoint each component uses; their keys and tokens are redacted.
    `for f in ${r('/etc/kubernetes')}/*.conf; do [ -f "$f" ] && { sec "files\${f#"$R"}"; cat "$f"; echo; }; done`,
    `for b in ${r(STORE_DIR)}/bundles/*/; do [ -d "$b" ] && { sec "store/$(basename "$b").marker"; cat "$b/.ferry-unpacked" 2>&1; echo; }; done`,
    ...JOURNAL_UNITS.map((u) => `${sec(`journal/${u}.log`)}; timeout 60 journalctl -u ${u} --since ${sq(JOURNAL_SINCE)} -n ${JOURNAL_LINES} --no-pager -o short-iso 2>&1 || echo "(journalctl -u ${u}: exit $?)"`),
    `${sec('df.txt')}; for d in ${DISK_DIRS.map(r).join(' ')}; do [ -e "$d" ] && timeout 10 df -h "$d" 2>&1; done`,
    `${sec('system.txt')}; uname -a; uptime; timeout 5 ip -brief addr 2>&1; free -m 2>&1`,
    'true',
  ];
  return `${lines.join('\n')}\n`;
}

/** A path from a section line, kept below the node's directory (a node's output is not trusted to name paths). */
export function sectionPath(name: string): string | undefined {
  const parts = name.split('/').filter((p) => p && p !== '.');
  if (!parts.length || parts.some((p) => p === '..')) return undefined;
  return parts.join('/');
}

/** Splits a collection script's output into files under `dir`, every line redacted on its way; returns the files written. */
export async function writeSections(input: Readable, dir: string, redactor: Redactor): Promise<string[]> {
  const written: string[] = [];
  let out: ReturnType<typeof createWriteStream> | undefined;
  const close = async () => {
    if (!out) return;
    out.end();
    await once(out, 'close');
    out = undefined;
  };
  try {
    for await (const line of readline.createInterface({ input, crlfDelay: Infinity })) {
      if (line.startsWith(SECTION)) {
        await close();
        const rel = sectionPath(line.slice(SECTION.length));
        if (!rel) continue;
        const file = path.join(dir, rel);
        await fs.mkdir(path.dirname(file), { recursive: true });
        out = createWriteStream(file, { mode: 0o600 });
        written.push(rel);
        redactor.reset();
        continue;
      }
      if (!out) continue;
      if (!out.write(`${redactor.line(line)}\n`)) await once(out, 'drain');
    }
  } finally {
    await close();
  }
  return written;
}

/** Writes text through the redactor. */
async function writeRedacted(file: string, text: string, known: string[]): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await pipeline(Readable.from([text]), redactStream(new Redactor(known)), createWriteStream(file, { mode: 0o600 }));
}

/** A command's output into a file through the redactor, bounded in time; its exit and stderr go at the end. */
async function commandTo(file: string, cmd: string, args: string[], known: string[], o: { timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<{ ok: boolean; error?: string }> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: o.env ?? process.env });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-4096)));
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs);
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  const out = createWriteStream(file, { mode: 0o600 });
  await pipeline(child.stdout, redactStream(new Redactor(known)), out, { end: false }).catch(() => {});
  const r = await ended;
  clearTimeout(timer);
  const tail = new Redactor(known).text(stderr.trim());
  const ok = r.code === 0;
  const why = r.error ? r.error.message : r.signal ? `killed after ${o.timeoutMs / 1000}s` : `exit ${r.code}`;
  out.end(ok ? (tail ? `(stderr) ${tail}\n` : '') : `(${cmd}: ${why}) ${tail}\n`);
  await once(out, 'close');
  return ok ? { ok } : { ok, error: `${why}${tail ? `: ${tail.split('\n').at(-1)}` : ''}` };
}

export interface SupportOptions {
  host: Host;
  /** The site state (the cluster's, else this server's mirror); undefined when there is none. */
  readState: () => Promise<SiteState | undefined>;
  ssh?: SshSettings;
  /** The archive to write. */
  out: string;
  /** Each remote node's whole collection, and each cluster query, is bounded by this. */
  timeoutMs?: number;
  /** For tests: the root prefix on remote nodes ({name} is replaced) and PATH entries put first there. */
  remoteRoot?: string;
  remotePath?: string;
  onNode?: (name: string, ok: boolean, detail: string) => void;
}

export interface NodeCollection {
  name: string;
  ip: string;
  role: string;
  /** This server, or reached over SSH. */
  where: 'here' | 'ssh';
  collected: boolean;
  /** Why not (a node that does not answer is listed, never fatal). */
  error?: string;
  files: number;
}

export interface SupportResult {
  out: string;
  bytes: number;
  nodes: NodeCollection[];
  /** Cluster queries that failed (the API down, etcd not answering), each with why. */
  failed: { what: string; error: string }[];
}

/** Secrets this server can name outright: the values of the secret fields of its kubeconfigs, answers and join config. */
async function knownSecrets(host: Host): Promise<string[]> {
  const out: string[] = [];
  const files = [ADMIN_CONF, KUBEADM_CONFIG, JOIN_CONFIG, ANSWERS_FILE, ...(await host.list('/etc/kubernetes')).filter((f) => f.endsWith('.conf')).map((f) => `/etc/kubernetes/${f}`)];
  for (const f of files) {
    const t = await host.read(f);
    if (!t) continue;
    for (const m of t.matchAll(/^\s*(?:-\s+)?["']?(token|client-key-data|password|certificateKey|certificate-key)["']?\s*:\s*["']?([^"'\s]+)/gim)) out.push(m[2]!);
  }
  return out;
}

/**
 * Collects one remote node's sections over SSH into `dir`. Past `ms` the connection is closed, so
 * nothing is still writing when the archive is made; what arrived by then is kept.
 */
async function collectRemote(n: NodeRecord, dir: string, known: string[], o: SupportOptions, ms: number): Promise<{ files: number; timedOut: boolean }> {
  let timedOut = false;
  let node: Awaited<ReturnType<typeof connectNode>> | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    node?.close();
  }, ms);
  try {
    node = await connectNode(addressOf(n), { ssh: o.ssh, confirmHostKey: async () => false, ...(o.remoteRoot ? { remoteRoot: o.remoteRoot } : {}) });
    if (timedOut) throw new Error(`no answer within ${ms / 1000}s`);
    const env = o.remotePath ? `PATH=${sq(o.remotePath)}:"$PATH" ` : '';
    const { stdout, done } = await node.session.execStream(`${env}sh -c ${sq(collectScript(node.root))}`);
    const files = await writeSections(stdout, dir, new Redactor(known));
    const r = timedOut ? undefined : await done;
    if (r && r.code !== 0 && !files.length) throw new Error(`the collection exited ${r.code}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`);
    return { files: files.length, timedOut };
  } finally {
    clearTimeout(timer);
    node?.close();
  }
}

/** Collects this server's sections into `dir`; past `ms` the whole collection (its process group) is killed. */
async function collectLocal(host: Host, dir: string, known: string[], ms: number): Promise<{ files: number; timedOut: boolean }> {
  const child = spawn('sh', ['-c', collectScript(host.root)], { stdio: ['ignore', 'pipe', 'ignore'], env: host.env, detached: true });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  }, ms);
  try {
    return { files: (await writeSections(child.stdout, dir, new Redactor(known))).length, timedOut };
  } finally {
    clearTimeout(timer);
  }
}

/** The bundle this server runs and the store's list: what identifies what the site installed. */
async function bundleIdentity(host: Host): Promise<unknown> {
  const text = await host.read(`${BUNDLE_DIR}/${TABLE[0]}`);
  let current: unknown = null;
  if (text) {
    try {
      const m = JSON.parse(text) as { name?: string; version?: string; created?: string; signer?: { fingerprint?: string }; kubernetes?: { version?: string } };
      current = { id: `${m.name}-${m.version}`, name: m.name, version: m.version, created: m.created, kubernetesVersion: m.kubernetes?.version ?? null, fingerprint: m.signer?.fingerprint ?? null };
    } catch (e) {
      current = { error: `bundle.json does not parse: ${(e as Error).message}` };
    }
  }
  const { SiteStore } = await import('../bundle/store.js');
  const store = await SiteStore.open(host.p(STORE_DIR), { create: false })
    .then((s) => s.list())
    .catch((e: Error) => ({ error: e.message }));
  return { current, store };
}

/** Gathers the site into one .tar.gz at `o.out`. Nodes that do not answer are listed as such. */
export async function collectSupportBundle(o: SupportOptions): Promise<SupportResult> {
  const ms = o.timeoutMs ?? 60_000;
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const topName = `ferry-support-${stamp}`;
  // Only redacted bytes are written here; the directory is the caller's alone (0700).
  const staging = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-support-'));
  const top = path.join(staging, topName);
  const failed: SupportResult['failed'] = [];
  try {
    await fs.mkdir(top, { recursive: true });
    const known = await knownSecrets(o.host);
    const state = await bounded(o.readState(), ms, undefined).catch(() => undefined);
    if (state) {
      const { operation, ...rest } = state;
      await writeRedacted(path.join(top, 'site', 'state.json'), `${JSON.stringify(rest, null, 2)}\n`, known);
      await writeRedacted(path.join(top, 'site', 'operation.json'), `${JSON.stringify(operation ?? null, null, 2)}\n`, known);
    } else failed.push({ what: 'site state', error: 'neither the cluster nor this server has one' });
    await writeRedacted(path.join(top, 'bundle-identity.json'), `${JSON.stringify(await bundleIdentity(o.host), null, 2)}\n`, known);

    const nodes = state?.nodes ?? [];
    const self = selfOf(nodes);
    const kube = (file: string, args: string[]) =>
      commandTo(path.join(top, 'cluster', file), 'kubectl', ['--kubeconfig', o.host.p(ADMIN_CONF), `--request-timeout=${Math.max(2, Math.floor(ms / 1000) - 2)}s`, ...args], known, { timeoutMs: ms, env: o.host.env }).then((r) => {
        if (!r.ok) failed.push({ what: `kubectl ${args.join(' ')}`, error: r.error ?? '' });
      });

    const cluster = Promise.all([
      kube('nodes-pods.txt', ['get', 'nodes,pods', '-A', '-o', 'wide']),
      kube('events.txt', ['get', 'events', '-A', '--sort-by=.lastTimestamp', '-o', 'wide']),
      kube('describe-nodes.txt', ['describe', 'nodes']),
      // The DNS zone, the LB's haproxy config and the site state as the cluster keeps them.
      kube('ferry-system-configmaps.yaml', ['-n', 'ferry-system', 'get', 'configmaps', '-o', 'yaml']),
      (async () => {
        const t = await etcdTls(o.host);
        if (!t) return failed.push({ what: 'etcd', error: 'no etcd client certificate on this server' });
        const servers = nodes.filter((n) => n.role === 'server').sort((a, b) => (a.name === self?.name ? -1 : b.name === self?.name ? 1 : 0));
        let members;
        for (const s of servers) if ((members = await bounded(memberList(t, s.ip, 10_000), 12_000, undefined))) break;
        if (!members) return failed.push({ what: 'etcd member list', error: 'no etcd member answered' });
        const status = await Promise.all(members.map((m) => (memberIp(m) ? bounded(endpointStatus(t, memberIp(m)!, 10_000), 12_000, undefined) : undefined)));
        await writeRedacted(path.join(top, 'cluster', 'etcd.json'), `${JSON.stringify({ members, status: members.map((m, i) => ({ name: m.name, ip: memberIp(m), status: status[i] ?? 'no answer' })) }, null, 2)}\n`, known);
      })(),
      (async () => {
        const fqdn = state?.answers.clusterFqdn;
        if (!fqdn) return;
        const dns = await import('node:dns');
        const rows = await Promise.all(
          nodes.map(async (n) => {
            const r = new dns.promises.Resolver({ timeout: 3000, tries: 1 });
            r.setServers([n.ip]);
            const answer = await bounded(r.resolve4(fqdn), 5000, [] as string[]);
            return { node: n.name, ip: n.ip, fqdn, answer, ok: answer.length === 1 && answer[0] === n.ip };
          }),
        );
        await writeRedacted(path.join(top, 'cluster', 'dns.json'), `${JSON.stringify(rows, null, 2)}\n`, known);
      })(),
      ...nodes
        .filter((n) => n.role === 'agent')
        .map(async (a) => {
          const csv = await bounded(
            fetch(`http://${a.ip}:8404/stats;csv`, { signal: AbortSignal.timeout(5000) }).then((r) => (r.ok ? r.text() : undefined)),
            6000,
            undefined,
          );
          await writeRedacted(path.join(top, 'lb', `${a.name}.txt`), csv ? `${JSON.stringify(parseHaproxyCsv(csv))}\n\n${csv}` : '(its haproxy stats page did not answer)\n', known);
        }),
    ]);

    const here: NodeCollection = { name: self?.name ?? os.hostname(), ip: self?.ip ?? '', role: self?.role ?? 'server', where: 'here', collected: false, files: 0 };
    const partly = (r: { files: number; timedOut: boolean }) => `stopped after ${ms / 1000}s, with the ${r.files} files collected by then`;
    const localP = collectLocal(o.host, path.join(top, 'nodes', here.name), known, ms).then(
      (r) => Object.assign(here, { collected: true, files: r.files }, r.timedOut ? { error: partly(r) } : {}),
      (e: Error) => Object.assign(here, { error: e.message }),
    );
    const remoteP = Promise.all(
      nodes
        .filter((n) => n.name !== self?.name)
        .map(async (n): Promise<NodeCollection> => {
          const row: NodeCollection = { name: n.name, ip: n.ip, role: n.role, where: 'ssh', collected: false, files: 0 };
          try {
            const r = await collectRemote(n, path.join(top, 'nodes', n.name), known, o, ms);
            Object.assign(row, { collected: true, files: r.files }, r.timedOut ? { error: partly(r) } : {});
          } catch (e) {
            row.error = (e as Error).message.split('\n')[0];
          }
          o.onNode?.(n.name, row.collected, row.error ?? `${row.files} files`);
          return row;
        }),
    );
    const [, , remote] = await Promise.all([cluster, localP, remoteP]);
    const rows = [here, ...remote];
    o.onNode?.(here.name, here.collected, here.error ?? `${here.files} files (this server)`);
    const summary = {
      ferryVersion: FERRY_VERSION,
      collectedAt: new Date().toISOString(),
      collectedOn: here.name,
      limits: { journalLines: JOURNAL_LINES, journalSince: JOURNAL_SINCE, fileTailBytes: FILE_TAIL_BYTES, perNodeSeconds: ms / 1000 },
      redaction: 'private keys, tokens, certificate keys, passwords and credentials are replaced by <redacted>',
      nodes: rows,
      failed,
    };
    await writeRedacted(path.join(top, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`, known);

    // The archive is streamed from the staged files, and appears under its name only when whole.
    const out = path.resolve(o.out);
    const partial = `${out}.partial`;
    try {
      await fs.mkdir(path.dirname(out), { recursive: true });
      await pipeline(tarCreate({ gzip: true, cwd: staging, portable: true }, [topName]) as unknown as NodeJS.ReadableStream, createWriteStream(partial, { mode: 0o600 }));
      await fs.rename(partial, out);
    } catch (e) {
      await fs.rm(partial, { force: true }).catch(() => {});
      throw new HostError(Codes.supportBundleWrite, `cannot write ${out}: ${(e as Error).message}`, { hint: 'Pick another place with --out (a directory you can write, with room for the logs).', cause: e });
    }
    return { out, bytes: (await fs.stat(out)).size, nodes: rows, failed };
  } finally {
    await fs.rm(staging, { recursive: true, force: true });
  }
}
