import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { etcdPost, type EtcdTls } from '../../src/ops/etcd.js';
import { execFileP, freePort, waitFor } from './peers.js';
import { siteBinary } from './site-cache.js';

/*
 * A real etcd on loopback with TLS as kubeadm sets it up: a CA, a server certificate for
 * 127.0.0.1, client certificate authentication on, and a health-check client certificate, all
 * made by openssl. The binary is the site suite's build (scripts/site/build-components.sh).
 */

export const etcdBinary = () => siteBinary('etcd', 'etcd', 'FERRY_ETCD');
/** etcdutl: FERRY_ETCDUTL, else the site cache's (build-components.sh adds it to an etcd build from before it). */
export const etcdutlBinary = () => siteBinary('etcd', 'etcdutl', 'FERRY_ETCDUTL');

export interface EtcdPki {
  dir: string;
  tls: EtcdTls;
  /** Files, as kubeadm names them under /etc/kubernetes/pki/etcd. */
  files: Record<'ca.crt' | 'ca.key' | 'server.crt' | 'server.key' | 'healthcheck-client.crt' | 'healthcheck-client.key', string>;
}

async function ossl(args: string[], cwd: string): Promise<void> {
  await execFileP('openssl', args, { cwd });
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir` (kubeadm's names). */
export async function makeEtcdPki(dir: string): Promise<EtcdPki> {
  await fs.mkdir(dir, { recursive: true });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await ossl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=etcd-ca'], dir);
  await fs.writeFile(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  await fs.writeFile(path.join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, cn, ext] of [['server', 'etcd', 'server.ext'], ['healthcheck-client', 'kube-etcd-healthcheck-client', 'client.ext']] as const) {
    await ossl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
    await ossl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', ext], dir);
  }
  const files = Object.fromEntries(['ca.crt', 'ca.key', 'server.crt', 'server.key', 'healthcheck-client.crt', 'healthcheck-client.key'].map((f) => [f, path.join(dir, f)])) as EtcdPki['files'];
  const read = (f: string) => fs.readFile(f);
  return { dir, files, tls: { ca: await read(files['ca.crt']), cert: await read(files['healthcheck-client.crt']), key: await read(files['healthcheck-client.key']) } };
}

export interface EtcdPeer {
  /** `127.0.0.1:<client port>` */
  endpoint: string;
  peerUrl: string;
  dataDir: string;
  proc: ChildProcess;
  log: () => string;
  stop(): Promise<void>;
}

/**
 * Starts etcd on free loopback ports with client TLS and client-certificate auth. With `existing`,
 * it starts on a data directory that already holds a member (a restored one): no initial cluster.
 */
export async function startEtcd(bin: string, pki: EtcdPki, o: { name: string; dataDir: string; peerPort?: number; existing?: boolean }): Promise<EtcdPeer> {
  const clientPort = await freePort();
  const peerPort = o.peerPort ?? (await freePort());
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name', o.name, '--data-dir', o.dataDir,
    '--listen-client-urls', `https://127.0.0.1:${clientPort}`, '--advertise-client-urls', `https://127.0.0.1:${clientPort}`,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
    ...(o.existing ? [] : ['--initial-cluster', `${o.name}=${peerUrl}`]),
    '--cert-file', pki.files['server.crt'], '--key-file', pki.files['server.key'], '--trusted-ca-file', pki.files['ca.crt'], '--client-cert-auth',
    '--listen-metrics-urls', `http://127.0.0.1:${await freePort()}`,
  ];
  let out = '';
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  proc.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  const endpoint = `127.0.0.1:${clientPort}`;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    await waitFor(async () => {
      if (proc.exitCode !== null) throw new Error('exited');
      const s = await etcdPost<{ leader?: string }>(pki.tls, endpoint, '/v3/maintenance/status', {}, 2000);
      return !!s.leader && s.leader !== '0';
    }, `etcd on ${endpoint}`, 60_000);
  } catch (e) {
    proc.kill('SIGTERM');
    throw new Error(`etcd did not come up on ${endpoint}: ${(e as Error).message}\n${out.slice(-3000)}`);
  }
  return {
    endpoint,
    peerUrl,
    dataDir: o.dataDir,
    proc,
    log: () => out,
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');

export async function etcdPut(t: EtcdTls, endpoint: string, key: string, value: string | Buffer): Promise<string> {
  const r = await etcdPost<{ header?: { revision?: string } }>(t, endpoint, '/v3/kv/put', { key: b64(key), value: b64(value) }, 10_000);
  return String(r.header?.revision ?? '');
}

export async function etcdGet(t: EtcdTls, endpoint: string, key: string): Promise<string | undefined> {
  const r = await etcdPost<{ kvs?: { value?: string }[] }>(t, endpoint, '/v3/kv/range', { key: b64(key) }, 10_000);
  const v = r.kvs?.[0]?.value;
  return v === undefined ? undefined : Buffer.from(v, 'base64').toString('utf8');
}
