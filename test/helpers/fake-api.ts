import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ROOT } from './cli.js';
import { waitFor } from './peers.js';

/**
 * The STAND-IN API server (fake-apiserver.mjs) as a child process of the test, and a kubeconfig
 * that points at it. Stopping it leaves a port that refuses connections: an API that does not answer.
 */
export async function startFakeApi(dir: string, port = 0): Promise<{ port: number; kubeconfig: string; record: string; stop(): Promise<void> }> {
  await fs.mkdir(dir, { recursive: true });
  const portFile = path.join(dir, `api-port-${Date.now()}`);
  const record = path.join(dir, 'api.jsonl');
  const child: ChildProcess = spawn(process.execPath, [path.join(ROOT, 'test/helpers/fake-apiserver.mjs'), portFile, record, 'ready', String(port)], { stdio: 'ignore' });
  await waitFor(async () => (await fs.readFile(portFile, 'utf8').catch(() => '')).length > 0, 'the fake API server to listen', 20_000);
  const p = Number(await fs.readFile(portFile, 'utf8'));
  const kubeconfig = path.join(dir, 'admin.conf');
  await fs.writeFile(kubeconfig, `apiVersion: v1\nkind: Config\nclusters: [{name: k, cluster: {server: "http://127.0.0.1:${p}", insecure-skip-tls-verify: true}}]\ncontexts: [{name: k, context: {cluster: k, user: a}}]\ncurrent-context: k\nusers: [{name: a, user: {token: x}}]\n`);
  return {
    port: p,
    kubeconfig,
    record,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
