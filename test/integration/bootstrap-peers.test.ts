import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { BootstrapValues } from '../../src/install/bootstrap.js';
import { apiServerStatus, through } from '../helpers/haproxy.js';
import { bootstrapConfig, SITE_NODES } from '../helpers/helm.js';
import { execFileP, freePort, tmpdir, waitFor } from '../helpers/peers.js';

/*
 * The configurations charts/ferry-bootstrap renders (through real helm, as ferry does) against real
 * peers: haproxy (Debian's, 2.6) checks and runs the rendered haproxy.cfg in front of two stand-in API servers on loopback. CoreDNS cannot be had
 * here (not in apt or npm), so the records of the Corefile's hosts block are served by real BIND
 * (named) from a zone file built from them, and queried with dig.
 */

let work: string;
const procs: ChildProcess[] = [];

beforeAll(async () => {
  work = await tmpdir('ferry-bootstrap-peers-');
});
afterEach(async () => {
  for (const p of procs.splice(0)) {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    }
  }
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { proc: ChildProcess; output: () => string } {
  const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  procs.push(proc);
  return { proc, output: () => out };
}

describe('haproxy.cfg with real haproxy', () => {
  /** A stand-in API server: answers every connection with its own name, then closes. */
  async function standIn(host: string, port: number, name: string): Promise<net.Server & { sockets: Set<net.Socket> }> {
    const sockets = new Set<net.Socket>();
    const srv = net.createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
      s.end(name);
    });
    await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(port, host, resolve));
    return Object.assign(srv, { sockets });
  }

  it('validates, balances across every server, marks a stopped one DOWN and turns unready when none is up', async () => {
    // Two servers on two loopback addresses, one port: the API server port the agents balance.
    const apiPort = await freePort();
    const statsPort = await freePort();
    const values: BootstrapValues = {
      domain: 'site.example',
      nodes: [
        { name: 's1', ip: '127.0.0.2', role: 'server' },
        { name: 's2', ip: '127.0.0.3', role: 'server' },
        { name: 'a1', ip: '127.0.0.1', role: 'agent' },
      ],
      apiServerPort: apiPort,
      lb: { statsPort, healthCheck: { interval: '200ms', fastInterval: '100ms', downInterval: '300ms', fall: 2, rise: 1 } },
    };
    const cfg = path.join(work, 'haproxy.cfg');
    await fs.writeFile(cfg, (await bootstrapConfig(values)).lb['haproxy.cfg']!);
    const env = { ...process.env, HOST_IP: '127.0.0.1' };
    // -dW: any warning fails the check too (execFile rejects on a non-zero exit).
    const check = await execFileP('haproxy', ['-c', '-dW', '-f', cfg], { env });
    expect(`${check.stdout}${check.stderr}`).toContain('Configuration file is valid');
    const s1 = await standIn('127.0.0.2', apiPort, 's1');
    const s2 = await standIn('127.0.0.3', apiPort, 's2');
    const lb = start('haproxy', ['-db', '-f', cfg], env);
    const stats = () => apiServerStatus(`http://127.0.0.1:${statsPort}`);
    const readyz = async () => (await fetch(`http://127.0.0.1:${statsPort}/readyz`)).status;
    try {
      await waitFor(async () => {
        const s = await stats();
        return s.s1 === 'UP' && s.s2 === 'UP';
      }, 'haproxy with both servers UP', 10_000);
      expect((await fetch(`http://127.0.0.1:${statsPort}/healthz`)).status).toBe(200);
      expect(await readyz()).toBe(200);

      const seen: string[] = [];
      for (let i = 0; i < 6; i++) seen.push(await through('127.0.0.1', apiPort));
      // Round robin: both servers get traffic (alternating, so three each unless a check intervened).
      expect(seen.filter((s) => s === 's1').length).toBeGreaterThanOrEqual(2);
      expect(seen.filter((s) => s === 's2').length).toBeGreaterThanOrEqual(2);
      expect(seen.every((s) => s === 's1' || s === 's2')).toBe(true);

      // Stop s1: haproxy marks it DOWN within a few checks, and every new connection goes to s2.
      await new Promise((r) => s1.close(r));
      await waitFor(async () => (await stats()).s1 === 'DOWN', 'haproxy to mark s1 DOWN', 60_000);
      expect((await stats()).s2).toBe('UP');
      const after: string[] = [];
      for (let i = 0; i < 6; i++) after.push(await through('127.0.0.1', apiPort));
      expect(after).toEqual(Array(6).fill('s2'));
      expect(await readyz()).toBe(200);

      // No API server left: the pod turns unready (and stays alive).
      await new Promise((r) => s2.close(r));
      await waitFor(async () => (await readyz()) === 503, 'haproxy /readyz to answer 503', 60_000);
      expect(await (await fetch(`http://127.0.0.1:${statsPort}/readyz`)).text()).toBe('no API server is up');
      expect((await fetch(`http://127.0.0.1:${statsPort}/healthz`)).status).toBe(200);
      expect(lb.proc.exitCode).toBeNull();
    } catch (e) {
      throw new Error(`${(e as Error).message}\nhaproxy said:\n${lb.output()}`);
    } finally {
      s1.close();
      s2.close();
    }
  });
});

describe('the site records, served by real BIND', () => {
  const values: BootstrapValues = {
    domain: 'site.example',
    nodes: [...SITE_NODES],
    records: [
      { name: 'ntp', ip: '10.0.0.5' },
      { name: 'harbor.site.example', ip: '10.0.0.6' },
      { name: 'harbor', ip: '10.0.0.7' },
    ],
  };

  /** What the node whose IP is `hostIp` answers, in the order of the Corefile's hosts block. */
  const records = (hostIp: string) => [
    { name: 'k8s-cluster.site.example', ip: hostIp },
    ...values.nodes.map((n) => ({ name: `${n.name}.site.example`, ip: n.ip })),
    { name: 'registry.site.example', ip: '10.0.0.11' },
    { name: 'registry.site.example', ip: '10.0.0.12' },
    { name: 'registry.site.example', ip: '10.0.0.13' },
    { name: 'ntp.site.example', ip: '10.0.0.5' },
    { name: 'harbor.site.example', ip: '10.0.0.6' },
    { name: 'harbor.site.example', ip: '10.0.0.7' },
  ];

  it('binds {$HOST_IP} and answers the cluster FQDN with it, from the records both share', async () => {
    const corefile = (await bootstrapConfig(values)).dns.Corefile!;
    expect(corefile).toMatch(/^ {4}bind \{\$HOST_IP\}$/m);
    expect(corefile).toMatch(/^ {8}\{\$HOST_IP\} k8s-cluster\.site\.example$/m);
    // Every line of the hosts block is one record, in order: what BIND serves below.
    const block = /^ {4}hosts \/dev\/null \{\n([\s\S]*?)\n {8}ttl /m.exec(corefile)![1]!.split('\n').map((l) => l.trim());
    expect(block).toEqual(records('{$HOST_IP}').map((r) => `${r.ip} ${r.name}`));
  });

  it('answers the cluster FQDN with the node\'s own IP, each node, every server for registry, the extra records, and NXDOMAIN with our SOA', async () => {
    const hostIp = '10.0.0.21'; // as agent a1 answers
    const dir = path.join(work, 'named');
    await fs.mkdir(dir, { recursive: true });
    // The Corefile's hosts block as CoreDNS sees it once {$HOST_IP} is expanded, as a zone file.
    const dns = (await bootstrapConfig(values)).dns;
    const corefile = dns.Corefile!.replaceAll('{$HOST_IP}', hostIp);
    const hosts = /^ {4}hosts \/dev\/null \{\n([\s\S]*?)\n {8}ttl /m.exec(corefile)![1]!.split('\n').map((l) => l.trim().split(/\s+/) as [string, string]);
    expect(hosts.map(([ip, name]) => ({ name, ip }))).toEqual(records(hostIp));
    const zone = [
      '$TTL 30',
      // The zone file the chart gives CoreDNS's file plugin: $ORIGIN and the SOA.
      dns['db.site.example']!.trim(),
      '@ IN NS k8s-cluster.site.example.', // BIND insists on an NS; CoreDNS's file plugin does not
      ...hosts.map(([ip, name]) => `${name}. IN A ${ip}`),
      '',
    ].join('\n');
    await fs.writeFile(path.join(dir, 'db.site.example'), zone);
    await execFileP('named-checkzone', ['site.example', path.join(dir, 'db.site.example')]);
    const port = await freePort();
    await fs.writeFile(
      path.join(dir, 'named.conf'),
      `options {
  directory "${dir}";
  pid-file "${dir}/named.pid";
  session-keyfile "${dir}/session.key";
  managed-keys-directory "${dir}";
  listen-on port ${port} { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
};
controls { };
zone "site.example" { type primary; file "${dir}/db.site.example"; };
`,
    );
    const named = start('named', ['-g', '-n', '1', '-c', path.join(dir, 'named.conf')]);
    const dig = async (name: string, ...extra: string[]) => (await execFileP('dig', [`@127.0.0.1`, '-p', String(port), '+time=1', '+tries=1', ...extra, name, 'A'])).stdout;
    const answers = async (name: string) => (await dig(name, '+short')).trim().split('\n').filter(Boolean).sort();
    try {
      await waitFor(async () => (await answers('k8s-cluster.site.example')).length > 0, 'named to answer', 10_000);
      expect(await answers('k8s-cluster.site.example')).toEqual([hostIp]);
      for (const n of values.nodes) expect(await answers(`${n.name}.site.example`)).toEqual([n.ip]);
      expect(await answers('registry.site.example')).toEqual(['10.0.0.11', '10.0.0.12', '10.0.0.13']);
      expect(await answers('ntp.site.example')).toEqual(['10.0.0.5']);
      expect(await answers('harbor.site.example')).toEqual(['10.0.0.6', '10.0.0.7']);
      const missing = await dig('nothere.site.example');
      expect(missing).toContain('status: NXDOMAIN');
      expect(missing).toMatch(/^site\.example\.\s+30\s+IN\s+SOA\s+k8s-cluster\.site\.example\. hostmaster\.site\.example\. 1 7200 1800 86400 30$/m);
    } catch (e) {
      throw new Error(`${(e as Error).message}\nnamed said:\n${named.output()}`);
    }
  });
});
