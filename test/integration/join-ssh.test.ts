import { execFile } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FERRY, ROOT } from '../helpers/cli.js';
import { startLab, type Lab, type NetnsHost } from '../helpers/netns.js';
import { execFileP, tmpdir } from '../helpers/peers.js';
import { startFakeApi } from '../helpers/fake-api.js';
import { writeStandins } from '../helpers/standins.js';
import type { SiteState } from '../../src/cluster/state.js';

/** The site state and lease the CLI reads in this file: a stand-in kept in a file per run (the real ones live in the cluster). */
const SITE_STANDIN = path.join(ROOT, 'test/helpers/site-standin.mjs');

/*
 * `ferry join` against real sshd in network namespaces, as an operator runs it, with known_hosts
 * written the ways OpenSSH writes them. The first server here is a minimal one (a bundle.json, the
 * CAs, a stand-in kubeadm). In `stub`, the bundle's "runtime" is a script that says it ran, so a
 * join that gets past the host key check shows its uploads and its plan command on the remote side;
 * in `full`, the runtime and CLI are the real ones and the joining node runs its whole plan.
 */

interface ServerRoot {
  root: string;
  standins: string;
}

let work: string;
let lab: Lab;
let real: NetnsHost;
let rogueEcdsa: NetnsHost;
let rogueRsa: NetnsHost;
let stub: ServerRoot;
let full: ServerRoot;
/** The STAND-IN API server the servers' admin.conf points at: the site state lives there. */
let api: Awaited<ReturnType<typeof startFakeApi>>;
/** What the `full` server's stand-in kubeadm prints: unique, so no other process can show them by chance. */
const secrets = { token: `${randomBytes(3).toString('hex')}.${randomBytes(8).toString('hex')}`, certificateKey: randomBytes(32).toString('hex') };
/** Keys "the real machine" at a rogue's address had: what known_hosts holds for it. */
const other: Record<string, string> = {};
let runs = 0;

const keyOf = (pub: string) => pub.split(' ').slice(0, 2).join(' ');
const hashed = (name: string) => {
  const salt = randomBytes(20);
  return `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`;
};

interface JoinRun {
  code: number;
  stdout: string;
  stderr: string;
  knownHostsBefore: string;
  knownHostsAfter: string;
  /** Anything reached the remote host: ferry's uploads create its root. */
  uploaded: boolean;
  /** sshd accepted our identity (the host key check comes before it). */
  authenticated: boolean;
  /** The first node's remote root, and the nodes the site state lists after the join. */
  remote: string;
  remotes: string[];
  nodesJson: { name: string; ip: string; role: string }[];
}

/**
 * Runs `ferry join` for nodes on `target` (default one agent; `also` gives the hosts of further
 * roles) with this known_hosts, optionally under another /etc/hosts. `prepare` sees each node's
 * remote root before the join starts.
 */
async function join(o: { target: NetnsHost; port?: number; knownHosts: string; acceptNew?: boolean; flags?: string[]; host?: string; etcHosts?: string; roles?: ('agent' | 'server')[]; also?: NetnsHost[]; exitCode?: number; server?: ServerRoot; prepare?: (remoteRoot: string) => Promise<void> }): Promise<JoinRun> {
  const n = ++runs;
  const server = o.server ?? stub;
  const roles = o.roles ?? ['agent'];
  const names = roles.map((_, i) => (roles.length === 1 ? `k8s-node-${n}` : `k8s-node-${n}-${i}`));
  const dir = path.join(work, `run-${n}`);
  await fs.mkdir(dir, { recursive: true });
  const kh = path.join(dir, 'known_hosts');
  await fs.writeFile(kh, o.knownHosts);
  await fs.writeFile(path.join(work, 'node-join-exit'), `${o.exitCode ?? 3}\n`);
  // The site's state, as the first server recorded it; ferry join reads the site's answers and nodes there.
  const stateFile = path.join(dir, 'site-state.json');
  await fs.writeFile(stateFile, JSON.stringify(siteState(kh, o.port ?? 22)));
  const answers = path.join(dir, 'answers.yaml');
  await fs.writeFile(
    answers,
    `apiVersion: ferry.dev/v1alpha1
kind: InstallAnswers
domain: site.test
node: {name: k8s-server-01, ip: ${lab.gatewayIp}}
podCidr: 10.244.0.0/16
serviceCidr: 10.96.0.0/12
ssh: {user: root, identityFile: ${lab.identity}, knownHosts: ${kh}, port: ${o.port ?? 22}}
join:
${names.map((name, i) => `  - {host: ${i ? o.also![i - 1]!.ip : (o.host ?? o.target.ip)}, name: ${name}, role: ${roles[i]}}`).join('\n')}
`,
  );
  const remote = path.join(dir, 'remote');
  const remotes = names.map((name) => path.join(remote, name));
  for (const r of remotes) await o.prepare?.(r);
  const logBefore = o.target.log().length;
  const args = [FERRY, 'join', '--answers', answers, '--site-standin', SITE_STANDIN, '--root', server.root, '--remote-root', path.join(remote, '{name}'), '--remote-path', server.standins, ...(roles.includes('server') ? ['--bundle', path.join(work, 'site.ferry.tar')] : []), ...(o.acceptNew ? ['--accept-new-host-keys'] : []), ...(o.flags ?? [])];
  // Another /etc/hosts, seen only by this ferry: host names resolve as an operator's site would have them.
  const [cmd, argv] = o.etcHosts ? ['unshare', ['-m', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', o.etcHosts, process.execPath, ...args]] : [process.execPath, args];
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(cmd, argv as string[], { cwd: ROOT, env: { ...process.env, PATH: `${server.standins}:${process.env.PATH}`, FERRY_SITE_STANDIN_FILE: stateFile }, timeout: 90_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );
  const nodes = (JSON.parse(await fs.readFile(stateFile, 'utf8')) as SiteState).nodes.map((x) => ({ name: x.name, ip: x.ip, role: x.role }));
  return {
    ...r,
    knownHostsBefore: o.knownHosts,
    knownHostsAfter: await fs.readFile(kh, 'utf8'),
    uploaded: await fs.access(remote).then(() => true, () => false),
    authenticated: /Accepted publickey/.test(o.target.log().slice(logBefore)),
    remote: remotes[0]!,
    remotes,
    nodesJson: nodes,
  };
}

/** The site state a first server records: its answers (the SSH settings of this run) and itself. */
function siteState(knownHosts: string, port: number): SiteState {
  return {
    apiVersion: 'ferry.dev/v1alpha1',
    kind: 'SiteState',
    answers: { domain: 'site.test', clusterFqdn: 'k8s-cluster.site.test', podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12', ssh: { user: 'root', identityFile: lab.identity, knownHosts, port } },
    nodes: [{ name: 'k8s-server-01', ip: lab.gatewayIp, role: 'server', platform: 'linux/amd64', kubernetesVersion: 'v1.37.2', bundle: 'k8s-0.1.0', joinedAt: '2026-01-01T00:00:00Z' }],
    bundles: [],
    current: 'k8s-0.1.0',
  };
}

/** A first server as ferry join needs it: the bundle's manifest, store index, runtime and CLI; the CAs; a kubeconfig. */
async function serverRoot(root: string, standins: string, runtime: string, ferryDir?: string): Promise<ServerRoot> {
  const b = path.join(root, 'var/lib/ferry/bundle');
  await fs.mkdir(path.join(b, 'images'), { recursive: true });
  await fs.mkdir(path.join(b, 'runtime/linux-amd64'), { recursive: true });
  await fs.writeFile(path.join(b, 'bundle.json'), JSON.stringify({ formatVersion: 1, name: 'k8s', version: '0.1.0', created: '2026-01-01T00:00:00Z', ferryVersion: '0.1.0', platforms: ['linux/amd64'], kubernetes: { version: 'v1.37.2' }, images: [], charts: [], files: [], runtime: [{ platform: 'linux/amd64', version: 'v24.0.0', path: 'runtime/linux-amd64/node', sha256: '0'.repeat(64), size: 1 }], signer: { fingerprint: 'SHA256:test', publicKey: '' }, contentSize: 0, entries: 0 }));
  await fs.writeFile(path.join(b, 'checksums.txt'), `${'0'.repeat(64)}  bundle.json\n`);
  await fs.writeFile(path.join(b, 'images/index.json'), JSON.stringify({ schemaVersion: 2, manifests: [] }));
  await fs.writeFile(path.join(b, 'runtime/linux-amd64/node'), runtime, { mode: 0o755 });
  if (ferryDir) await fs.cp(ferryDir, path.join(b, 'ferry'), { recursive: true });
  else {
    await fs.mkdir(path.join(b, 'ferry'), { recursive: true });
    await fs.writeFile(path.join(b, 'ferry/ferry.mjs'), '// ferry\n');
  }
  await fs.mkdir(path.join(root, 'etc/ferry/pki'), { recursive: true });
  await fs.mkdir(path.join(root, 'etc/kubernetes/pki'), { recursive: true });
  const ca = (key: string, crt: string, cn: string) => execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', crt, '-subj', `/CN=${cn}`, '-days', '1']);
  await ca(path.join(root, 'etc/ferry/pki/ca.key'), path.join(root, 'etc/ferry/pki/ca.crt'), 'site');
  await ca(path.join(root, 'k8s-ca.key'), path.join(root, 'etc/kubernetes/pki/ca.crt'), 'kubernetes');
  // The site state is kept in the stand-in API; applyObjects of no objects sends nothing.
  await fs.copyFile(api.kubeconfig, path.join(root, 'etc/kubernetes/admin.conf'));
  return { root, standins };
}

/** A refusal: the join row names the code, nothing reached the host, known_hosts is byte for byte what it was. */
function expectRefused(r: JoinRun, code: string, message: RegExp) {
  expect(r.stdout, r.stderr).toMatch(new RegExp(`^k8s-node-\\d+\\s+\\S+\\s+agent\\s+FAILED ${code}\\s`, 'm'));
  expect(r.stderr).toMatch(message);
  expect(r.code).toBe(4);
  expect(r.authenticated).toBe(false);
  expect(r.uploaded).toBe(false);
  expect(r.knownHostsAfter).toBe(r.knownHostsBefore);
}

/** Got past the host key check: the runtime and ferry were uploaded and the plan command ran there. */
async function expectJoinedThrough(r: JoinRun) {
  expect(r.stdout, r.stderr).toMatch(/^k8s-node-\d+\s+\S+\s+agent\s+FAILED JOIN_FAILED\s/m);
  expect(r.stderr).toMatch(/node-join stand-in ran/);
  expect(r.authenticated).toBe(true);
  expect(await fs.readFile(path.join(r.remote, 'var/lib/ferry/ferry/ferry.mjs'), 'utf8')).toBe('// ferry\n');
}

/**
 * Reads every process's command line and environment (/proc/<pid>/cmdline, environ) over and over
 * until stopped: which held a needle, and the kubeadm command lines seen, to show it looked in time.
 */
function sampleProcesses(needles: string[]): { stop(): Promise<{ hits: string[]; kubeadm: Set<string> }> } {
  const hits = new Set<string>();
  const kubeadm = new Set<string>();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const pids = (await fs.readdir('/proc')).filter((p) => /^\d+$/.test(p));
      await Promise.all(
        pids.map(async (pid) => {
          for (const f of ['cmdline', 'environ']) {
            const text = (await fs.readFile(`/proc/${pid}/${f}`).catch(() => Buffer.alloc(0))).toString('utf8').replaceAll('\0', ' ').trim();
            const m = f === 'cmdline' ? /\bkubeadm (.*)$/.exec(text) : null;
            if (m) kubeadm.add(m[1]!);
            if (needles.some((x) => text.includes(x))) hits.add(`${pid} ${f}: ${text.slice(0, 200)}`);
          }
        }),
      );
      await sleep(10);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { hits: [...hits], kubeadm };
    },
  };
}

beforeAll(async () => {
  work = await tmpdir('ferry-join-ssh-');
  lab = await startLab(path.join(work, 'lab'), ['real', 'rogue-ecdsa', 'rogue-rsa'], {
    real: { hostKeys: ['ed25519', 'ecdsa', 'rsa'], ports: [22, 2222] },
    'rogue-ecdsa': { hostKeys: ['ecdsa'], ports: [22, 2222] },
    'rogue-rsa': { hostKeys: ['rsa'] },
  });
  [real, rogueEcdsa, rogueRsa] = lab.hosts as [NetnsHost, NetnsHost, NetnsHost];
  for (const t of ['ed25519', 'ecdsa', 'rsa']) {
    const f = path.join(work, `other_${t}`);
    await execFileP('ssh-keygen', ['-q', '-t', t, '-N', '', '-f', f]);
    const pub = (await fs.readFile(`${f}.pub`, 'utf8')).trim();
    other[pub.split(' ')[0]!] = keyOf(pub);
  }
  api = await startFakeApi(path.join(work, 'api'));
  stub = await serverRoot(path.join(work, 'server'), await writeStandins(path.join(work, 'standins')), `#!/bin/sh\ncat > /dev/null\necho "node-join stand-in ran: $*" >&2\nexit "$(cat '${work}/node-join-exit')"\n`);
  full = await serverRoot(path.join(work, 'server-full'), await writeStandins(path.join(work, 'standins-full'), { ...secrets, holdSeconds: 2 }), `#!/bin/sh\nexec '${process.execPath}' "$@"\n`, path.join(ROOT, 'dist/ferry'));
  await fs.writeFile(path.join(work, 'site.ferry.tar'), 'not a real bundle: the joining server finds its store step done\n');
}, 120_000);

afterAll(async () => {
  await api?.stop();
  await lab?.down();
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry join refuses a host whose key is not the one known_hosts lists, whatever its type', () => {
  // [what, target, port, known_hosts for the target's address]
  const cases: [string, () => NetnsHost, number, () => string][] = [
    ['ed25519 known, the host offers only ECDSA', () => rogueEcdsa, 22, () => `${rogueEcdsa.ip} ${other['ssh-ed25519']}\n`],
    ['ECDSA known, the host offers only RSA', () => rogueRsa, 22, () => `${rogueRsa.ip} ${other['ecdsa-sha2-nistp256']}\n`],
    ['ed25519 and ECDSA known, the host offers only RSA', () => rogueRsa, 22, () => `${rogueRsa.ip} ${other['ssh-ed25519']}\n${rogueRsa.ip} ${other['ecdsa-sha2-nistp256']}\n`],
    ['RSA known, the host offers only ECDSA', () => rogueEcdsa, 22, () => `${rogueEcdsa.ip} ${other['ssh-rsa']}\n`],
    ['ed25519 known under a hashed name', () => rogueEcdsa, 22, () => `${hashed(rogueEcdsa.ip)} ${other['ssh-ed25519']}\n`],
    ['ed25519 known for [host]:2222', () => rogueEcdsa, 2222, () => `[${rogueEcdsa.ip}]:2222 ${other['ssh-ed25519']}\n`],
    ['ed25519 known for a hashed [host]:2222', () => rogueEcdsa, 2222, () => `${hashed(`[${rogueEcdsa.ip}]:2222`)} ${other['ssh-ed25519']}\n`],
    ['ed25519 known through a name list and a wildcard', () => rogueEcdsa, 22, () => `gone.site.test,${rogueEcdsa.ip.replace(/\.\d+$/, '.*')} ${other['ssh-ed25519']}\n`],
  ];
  it.each(cases)('%s: refused even with --accept-new-host-keys, nothing uploaded, known_hosts unchanged', async (_what, target, port, lines) => {
    const knownHosts = lines();
    const r = await join({ target: target(), port, knownHosts, acceptNew: true });
    expectRefused(r, 'SSH_HOST_KEY_MISMATCH', /does not match .*known_hosts/);
    // OpenSSH's own client, told to accept new keys, refuses the same host for the same reason.
    const kh = path.join(work, `openssh-${runs}`);
    await fs.writeFile(kh, knownHosts);
    const ssh = await execFileP('ssh', ['-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=accept-new', '-o', `UserKnownHostsFile=${kh}`, '-o', 'GlobalKnownHostsFile=/dev/null', '-i', lab.identity, '-p', String(port), `root@${target().ip}`, 'true']).then(() => 'connected', (e: { stderr?: string }) => e.stderr ?? '');
    expect(ssh).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
    expect(await fs.readFile(kh, 'utf8')).toBe(knownHosts);
  });
});

describe('ferry join refuses a revoked host key, even where another line lists it', () => {
  const cases: [string, () => string][] = [
    ['@revoked * beside a plain line with the same key', () => `${real.ip} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n@revoked * ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`],
    ['@revoked for the address, the ECDSA key the host is asked for first', () => `@revoked ${real.ip} ${keyOf(real.hostKeys['ecdsa-sha2-nistp256']!)}\n${real.ip} ${keyOf(real.hostKeys['ecdsa-sha2-nistp256']!)}\n`],
    ['@revoked under a hashed name, and no other line', () => `@revoked ${hashed(real.ip)} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`],
  ];
  it.each(cases)('%s: refused with --accept-new-host-keys, nothing uploaded, known_hosts unchanged', async (_what, knownHosts) => {
    const r = await join({ target: real, knownHosts: knownHosts(), acceptNew: true });
    expectRefused(r, 'SSH_HOST_KEY_REVOKED', /is revoked in .*known_hosts \(line \d\)/);
  });
});

describe('ferry join refuses a host known_hosts vouches for only through @cert-authority (ferry cannot check host certificates)', () => {
  const cases: [string, () => string][] = [
    ['a CA key of the type the host offers', () => `@cert-authority *.site.test,${real.ip} ${other['ssh-ed25519']}\n`],
    ['a CA key of another type', () => `@cert-authority ${real.ip} ${other['ecdsa-sha2-nistp256']}\n`],
    ["the host's own key, listed as a CA", () => `@cert-authority * ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`],
  ];
  it.each(cases)('%s: refused with --accept-new-host-keys, nothing uploaded, known_hosts unchanged', async (_what, knownHosts) => {
    const r = await join({ target: real, knownHosts: knownHosts(), acceptNew: true });
    expectRefused(r, 'SSH_HOST_KEY_CERT_AUTHORITY', /only through a @cert-authority line .*cannot check SSH host certificates/);
  });
});

describe('ferry join accepts a host whose key known_hosts lists, in every form OpenSSH writes, without asking', () => {
  // No terminal and no --accept-new-host-keys: a key known_hosts did not vouch for would stop at a prompt.
  const cases: [string, number, () => string][] = [
    ['a plain line', 22, () => `${real.ip} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`],
    ['a hashed line (ssh-keygen -H)', 22, () => `${hashed(real.ip)} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`],
    ['[host]:2222 for port 2222', 2222, () => `[${real.ip}]:2222 ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`],
    ['a hashed [host]:2222 for port 2222', 2222, () => `${hashed(`[${real.ip}]:2222`)} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`],
    ['only its ECDSA key, though it offers ed25519 too', 22, () => `${real.ip} ${keyOf(real.hostKeys['ecdsa-sha2-nistp256']!)}\n`],
    ['only its RSA key, though it offers ed25519 too', 22, () => `${real.ip} ${keyOf(real.hostKeys['ssh-rsa']!)}\n`],
    ['a name list with a wildcard, beside a revoked other key', 22, () => `@revoked * ${other['ssh-ed25519']}\nk8s-node.site.test,${real.ip.replace(/\.\d+$/, '.*')} ${keyOf(real.hostKeys['ssh-ed25519']!)}`],
  ];
  it.each(cases)('%s', async (_what, port, knownHosts) => {
    const r = await join({ target: real, port, knownHosts: knownHosts() });
    await expectJoinedThrough(r);
    expect(r.knownHostsAfter).toBe(r.knownHostsBefore);
  });
});

describe('ferry join matches known_hosts entries by port', () => {
  it('an entry for port 22 does not vouch for port 2222: the key is new there, asked about, and recorded as [host]:2222', async () => {
    const kh = `${real.ip} ${other['ssh-ed25519']}\n`;
    const asked = await join({ target: real, port: 2222, knownHosts: kh });
    expect(asked.stdout).toMatch(/FAILED PROMPT_NO_TTY\s/m);
    expect(asked.uploaded).toBe(false);
    const r = await join({ target: real, port: 2222, knownHosts: kh, acceptNew: true });
    await expectJoinedThrough(r);
    expect(r.knownHostsAfter).toBe(`${kh}[${real.ip}]:2222 ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`);
  });

  it('an entry for [host]:2222 does not vouch for port 22 either; accept-new records the host on a line of its own', async () => {
    const kh = `[${real.ip}]:2222 ${other['ssh-ed25519']}`;
    const r = await join({ target: real, port: 22, knownHosts: kh, acceptNew: true });
    await expectJoinedThrough(r);
    expect(r.knownHostsAfter).toBe(`${kh}\n${real.ip} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`);
  });
});

describe('ferry join uploads secrets created 0600 from their first byte', () => {
  it("the site CA key a joining server receives is never created readable by others, not even empty", async () => {
    const r = await join({ target: real, knownHosts: `${real.ip} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`, roles: ['server'] });
    expect(r.stderr).toMatch(/node-join stand-in ran/);
    // sftp-server logs every open with the mode it creates the file with.
    const opens = (await real.sftpLog()).split('\n').filter((l) => /open "/.test(l) && l.includes(`"${r.remote}/etc/ferry/pki/ca.key`));
    // The first open creates it, exclusively, 0600; later ones (the copy) find it made.
    expect(opens[0]).toMatch(/flags \S*CREATE\S*EXCL mode 0600\s*$/);
    expect(opens.filter((l) => /EXCL/.test(l))).toHaveLength(1);
    expect((await fs.stat(path.join(r.remote, 'etc/ferry/pki/ca.key'))).mode & 0o777).toBe(0o600);
  });
});

describe('ferry join --allow-downgrade', () => {
  it("reaches a joining server's node-join, and only when given", async () => {
    const kh = `${real.ip} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`;
    const given = await join({ target: real, knownHosts: kh, roles: ['server'], flags: ['--allow-downgrade'] });
    expect(given.stderr).toMatch(/node-join stand-in ran: --disable-warning=DEP0040 --disable-warning=DEP0169 \S+ node-join --root \S+ --bundle \S+site\.ferry\.tar --allow-downgrade/);
    const plain = await join({ target: real, knownHosts: kh, roles: ['server'] });
    expect(plain.stderr).toMatch(/node-join stand-in ran: --disable-warning=DEP0040 --disable-warning=DEP0169 \S+ node-join --root \S+ --bundle \S+site\.ferry\.tar(?! --allow-downgrade)/);
    expect(plain.stderr).not.toContain('--allow-downgrade');
  });
});

describe('a join host given by name', () => {
  it("reaches the site state's nodes as the address it resolves to, and is still reached over SSH by its name", async () => {
    const hosts = path.join(work, 'hosts');
    await fs.writeFile(hosts, `127.0.0.1 localhost\n${real.ip} k8s-node.site.test\n`);
    const r = await join({ target: real, host: 'k8s-node.site.test', knownHosts: `k8s-node.site.test ${keyOf(real.hostKeys['ssh-ed25519']!)}\n`, etcHosts: hosts, exitCode: 0 });
    expect(r.authenticated).toBe(true);
    expect(r.nodesJson).toEqual(expect.arrayContaining([
      { name: 'k8s-server-01', ip: lab.gatewayIp, role: 'server' },
      { name: `k8s-node-${runs}`, ip: real.ip, role: 'agent' },
    ]));
  });
});

describe('ferry join hands no secret to a program on its command line or in its environment', () => {
  it('the token and certificate key never show in /proc/<pid>/cmdline or environ while kubeadm creates and uses them', async () => {
    const sampler = sampleProcesses([secrets.token, secrets.certificateKey]);
    // An agent and a server, each running its real plan; the site service's steps are marked done.
    const r = await join({
      target: real,
      knownHosts: `${real.ip} ${keyOf(real.hostKeys['ssh-ed25519']!)}\n${rogueRsa.ip} ${keyOf(rogueRsa.hostKeyPub)}\n`,
      roles: ['agent', 'server'],
      also: [rogueRsa],
      server: full,
      prepare: async (remote) => {
        for (const step of ['binaries', 'store']) {
          await fs.mkdir(path.join(remote, 'var/lib/ferry/state'), { recursive: true });
          await fs.writeFile(path.join(remote, 'var/lib/ferry/state', step), 'v1');
        }
      },
    });
    const { hits, kubeadm } = await sampler.stop();
    for (const remote of r.remotes) expect(await fs.readFile(path.join(remote, 'kubeadm-join.seen.yaml'), 'utf8'), r.stderr).toContain(secrets.token);
    expect(await fs.readFile(path.join(r.remotes[1]!, 'kubeadm-join.seen.yaml'), 'utf8')).toContain(secrets.certificateKey);
    expect(hits).toEqual([]);
    // The sampler looked while each secret was live: kubeadm printing it on the server, using it on each node.
    // (It sees the whole machine, so other test files' kubeadm stand-ins may show up too.)
    expect([...kubeadm]).toEqual(expect.arrayContaining(['init phase upload-certs --upload-certs --config /etc/ferry/kubeadm.yaml', 'join --config /etc/ferry/kubeadm-join.yaml', 'token create --ttl 1h']));
  }, 90_000);
});
