import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BootstrapValues } from '../../src/install/bootstrap.js';
import { apiServerStatus, through } from '../helpers/haproxy.js';
import { bootstrapConfig } from '../helpers/helm.js';
import { startLab } from '../helpers/netns.js';
import { execFileP, tmpdir, waitFor } from '../helpers/peers.js';

/**
 * The LB DaemonSet's haproxy, as rendered, runs in an agent's network namespace and balances
 * across stand-in API servers (small TCP servers that answer their own name, named as stand-ins)
 * in two server namespaces, all on one bridge, as on a site.
 */
function standInApi(ns: string, ip: string, name: string): ChildProcess {
  const code = `require('net').createServer((s) => { s.on('error', () => {}); s.end(${JSON.stringify(name)}); }).listen(6443, ${JSON.stringify(ip)}, () => console.log('up'))`;
  return spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'ignore'] });
}

describe('the agent load balancer in network namespaces (stand-in API servers)', () => {
  it('balances the API port across every server and fails over when one dies', async () => {
    const dir = await tmpdir('ferry-lb-');
    const lab = await startLab(dir, ['s1', 's2', 'a1']);
    const procs: ChildProcess[] = [];
    try {
      const [s1, s2, a1] = lab.hosts as [typeof lab.hosts[0], typeof lab.hosts[0], typeof lab.hosts[0]];
      const values: BootstrapValues = {
        domain: 'site.example',
        nodes: [
          { name: 's1', ip: s1.ip, role: 'server' },
          { name: 's2', ip: s2.ip, role: 'server' },
          { name: 'a1', ip: a1.ip, role: 'agent' },
        ],
        lb: { healthCheck: { interval: '200ms', fastInterval: '100ms', downInterval: '300ms', fall: 2, rise: 1 } },
      };
      const cfg = path.join(dir, 'haproxy.cfg');
      await fs.writeFile(cfg, (await bootstrapConfig(values)).lb['haproxy.cfg']!);
      const api1 = standInApi(s1.ns, s1.ip, 's1');
      const api2 = standInApi(s2.ns, s2.ip, 's2');
      procs.push(api1, api2);
      // haproxy on the agent, bound to its own address (HOST_IP, as the downward API gives it).
      const lb = spawn('ip', ['netns', 'exec', a1.ns, 'haproxy', '-db', '-f', cfg], { env: { ...process.env, HOST_IP: a1.ip }, stdio: ['ignore', 'pipe', 'pipe'] });
      let lbOut = '';
      lb.stdout!.on('data', (d: Buffer) => (lbOut += d.toString()));
      lb.stderr!.on('data', (d: Buffer) => (lbOut += d.toString()));
      procs.push(lb);
      const stats = () => apiServerStatus(`http://${a1.ip}:8404`);
      await waitFor(async () => {
        const s = await stats();
        return s.s1 === 'UP' && s.s2 === 'UP';
      }, `both servers UP (haproxy: ${lbOut})`, 15_000);
      const seen: string[] = [];
      for (let i = 0; i < 8; i++) seen.push(await through(a1.ip, 6443));
      expect(new Set(seen)).toEqual(new Set(['s1', 's2']));
      // s1's API server dies: haproxy marks it DOWN and sends every new connection to s2.
      api1.kill('SIGKILL');
      await waitFor(async () => (await stats()).s1 === 'DOWN', 'haproxy to mark s1 DOWN', 60_000);
      const after: string[] = [];
      for (let i = 0; i < 6; i++) after.push(await through(a1.ip, 6443));
      expect(after).toEqual(Array(6).fill('s2'));
      // The balancer listens only on the agent's own address, not on every interface.
      await expect(execFileP('ip', ['netns', 'exec', a1.ns, 'bash', '-c', 'exec 3<>/dev/tcp/127.0.0.1/6443'])).rejects.toThrow(/Connection refused/);
      await execFileP('ip', ['netns', 'exec', a1.ns, 'bash', '-c', `exec 3<>/dev/tcp/${a1.ip}/6443`]);
    } finally {
      for (const p of procs) p.kill('SIGKILL');
      await lab.down();
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
