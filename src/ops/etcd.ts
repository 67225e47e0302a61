import https from 'node:https';
import { Codes, IntegrityError } from '../errors.js';
import type { Host } from '../install/host.js';

/*
 * etcd as a server reaches it: its own v3 JSON gateway on every member's client port, with the
 * health-check client certificate kubeadm writes on every control-plane node. No etcdctl needed.
 */

const ETCD_PKI = '/etc/kubernetes/pki/etcd';
export const ETCD_CLIENT_PORT = 2379;

export interface EtcdMember {
  /** uint64 as a decimal string (as etcd's JSON gateway writes it). */
  id: string;
  name: string;
  peerURLs: string[];
  clientURLs: string[];
  isLearner: boolean;
}

export interface EtcdEndpointStatus {
  memberId: string;
  leader: string;
  dbSize: number;
  version: string;
}

export interface EtcdTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** The health-check client's TLS material on this server (undefined on a node without etcd's PKI). */
export async function etcdTls(host: Host): Promise<EtcdTls | undefined> {
  const fs = await import('node:fs/promises');
  try {
    const [ca, cert, key] = await Promise.all(['ca.crt', 'healthcheck-client.crt', 'healthcheck-client.key'].map((f) => fs.readFile(host.p(`${ETCD_PKI}/${f}`))));
    return { ca: ca!, cert: cert!, key: key! };
  } catch {
    return undefined;
  }
}

/** One POST to a member's JSON gateway; rejects on no answer within timeoutMs. */
export function etcdPost<T>(t: EtcdTls, ip: string, path: string, body: unknown, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    // etcd's certificates name the node's IP; the CA check stays on, the name check is the IP.
    const req = https.request({ host: ip, port: ETCD_CLIENT_PORT, path, method: 'POST', ca: t.ca, cert: t.cert, key: t.key, timeout: timeoutMs, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString('utf8')));
      res.on('end', () => {
        if ((res.statusCode ?? 500) >= 300) return reject(new Error(`etcd ${ip} ${path}: HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        try {
          resolve(JSON.parse(text) as T);
        } catch (e) {
          reject(e as Error);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`etcd ${ip} did not answer in ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end(data);
  });
}

export async function memberList(t: EtcdTls, ip: string, timeoutMs?: number): Promise<EtcdMember[]> {
  const r = await etcdPost<{ members?: { ID?: string; name?: string; peerURLs?: string[]; clientURLs?: string[]; isLearner?: boolean }[] }>(t, ip, '/v3/cluster/member/list', {}, timeoutMs);
  return (r.members ?? []).map((m) => ({ id: String(m.ID ?? ''), name: m.name ?? '', peerURLs: m.peerURLs ?? [], clientURLs: m.clientURLs ?? [], isLearner: !!m.isLearner }));
}

export async function endpointStatus(t: EtcdTls, ip: string, timeoutMs?: number): Promise<EtcdEndpointStatus> {
  const r = await etcdPost<{ header?: { member_id?: string }; leader?: string; dbSize?: string; version?: string }>(t, ip, '/v3/maintenance/status', {}, timeoutMs);
  return { memberId: String(r.header?.member_id ?? ''), leader: String(r.leader ?? '0'), dbSize: Number(r.dbSize ?? 0), version: r.version ?? '' };
}

export async function memberRemove(t: EtcdTls, ip: string, id: string, timeoutMs = 15_000): Promise<void> {
  await etcdPost(t, ip, '/v3/cluster/member/remove', { ID: id }, timeoutMs);
}

/** The IP in a member's first peer URL (https://10.0.0.11:2380). */
export const memberIp = (m: EtcdMember) => /^https?:\/\/\[?([^\]/]+?)\]?:\d+/.exec(m.peerURLs[0] ?? '')?.[1];

/** Members needed for quorum among n voting members. */
export const quorumOf = (n: number) => Math.floor(n / 2) + 1;

/**
 * Whether removing one member keeps quorum (pure): the voting members after the removal, and how many
 * of them answer, against the quorum of the smaller cluster. The last member is never removable.
 */
export function removalKeepsQuorum(o: { voters: number; healthyVoters: number; targetHealthy: boolean }): { ok: boolean; after: number; healthyAfter: number; need: number } {
  const after = o.voters - 1;
  const healthyAfter = o.healthyVoters - (o.targetHealthy ? 1 : 0);
  const need = after > 0 ? quorumOf(after) : 1;
  return { ok: after > 0 && healthyAfter >= need, after, healthyAfter, need };
}

/**
 * Streams a snapshot of the member at `ip` into `file` (0600) through the JSON gateway, decoding as
 * the chunks arrive, and checks the sha256 etcd appends as its last 32 bytes. Returns the size of
 * the database and the hex digest of the whole file.
 */
export async function snapshotTo(t: EtcdTls, ip: string, file: string, timeoutMs = 600_000): Promise<{ bytes: number; sha256: string }> {
  const { createWriteStream, promises: fsp } = await import('node:fs');
  const { createHash } = await import('node:crypto');
  const tmp = `${file}.part`;
  const out = createWriteStream(tmp, { mode: 0o600 });
  const whole = createHash('sha256');
  const db = createHash('sha256');
  // The last 32 bytes are etcd's digest of the rest: held back until more bytes come.
  let tail = Buffer.alloc(0);
  let bytes = 0;
  const write = (b: Buffer) => new Promise<void>((r, j) => out.write(b, (e) => (e ? j(e) : r())));
  const take = async (blob: Buffer) => {
    whole.update(blob);
    const all = Buffer.concat([tail, blob]);
    const keep = Math.min(32, all.length);
    const body = all.subarray(0, all.length - keep);
    tail = Buffer.from(all.subarray(all.length - keep));
    db.update(body);
    bytes += body.length;
    await write(blob);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const req = https.request({ host: ip, port: ETCD_CLIENT_PORT, path: '/v3/maintenance/snapshot', method: 'POST', ca: t.ca, cert: t.cert, key: t.key, timeout: timeoutMs, headers: { 'content-type': 'application/json', 'content-length': 2 } }, (res) => {
        if ((res.statusCode ?? 500) >= 300) {
          res.resume();
          return reject(new Error(`etcd ${ip} snapshot: HTTP ${res.statusCode}`));
        }
        let line = '';
        let chain = Promise.resolve();
        res.on('data', (d: Buffer) => {
          line += d.toString('utf8');
          let nl: number;
          while ((nl = line.indexOf('\n')) >= 0) {
            const one = line.slice(0, nl).trim();
            line = line.slice(nl + 1);
            if (!one) continue;
            const m = JSON.parse(one) as { result?: { blob?: string }; error?: { message?: string } };
            if (m.error) return req.destroy(new Error(`etcd ${ip} snapshot: ${m.error.message ?? 'error'}`));
            const blob = Buffer.from(m.result?.blob ?? '', 'base64');
            res.pause();
            chain = chain.then(() => take(blob)).then(() => void res.resume(), (e: Error) => void req.destroy(e));
          }
        });
        res.on('end', () => chain.then(() => (line.trim() ? take(Buffer.from((JSON.parse(line) as { result?: { blob?: string } }).result?.blob ?? '', 'base64')) : undefined)).then(resolve, reject));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`etcd ${ip} snapshot took over ${timeoutMs / 1000}s`)));
      req.on('error', reject);
      req.end('{}');
    });
    await new Promise<void>((r, j) => out.end((e?: Error | null) => (e ? j(e) : r())));
  } catch (e) {
    out.destroy();
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  if (tail.length !== 32 || !tail.equals(db.digest())) {
    await fsp.rm(tmp, { force: true });
    throw new IntegrityError(Codes.snapshotDamaged, `the etcd snapshot from ${ip} does not match the sha256 etcd appended to it`, { hint: 'Check etcd (ferry status) and run the same command again.' });
  }
  await fsp.rename(tmp, file);
  return { bytes, sha256: whole.digest('hex') };
}
