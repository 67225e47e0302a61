import { createHash } from 'node:crypto';
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
  /** The key-value store's revision when it answered. */
  revision: string;
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

/** A member's client address: an IP (port 2379), or `ip:port` / `[v6]:port` where a test runs etcd elsewhere. */
export function etcdEndpoint(ip: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(ip) ?? /^([^:]+):(\d+)$/.exec(ip);
  return m ? { host: m[1]!, port: Number(m[2]) } : { host: ip, port: ETCD_CLIENT_PORT };
}

/** One POST to a member's JSON gateway; rejects on no answer within timeoutMs. */
export function etcdPost<T>(t: EtcdTls, ip: string, path: string, body: unknown, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    // etcd's certificates name the node's IP; the CA check stays on, the name check is the IP.
    const req = https.request({ ...etcdEndpoint(ip), path, method: 'POST', ca: t.ca, cert: t.cert, key: t.key, timeout: timeoutMs, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
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
  const r = await etcdPost<{ header?: { member_id?: string; revision?: string }; leader?: string; dbSize?: string; version?: string }>(t, ip, '/v3/maintenance/status', {}, timeoutMs);
  return { memberId: String(r.header?.member_id ?? ''), revision: String(r.header?.revision ?? '0'), leader: String(r.leader ?? '0'), dbSize: Number(r.dbSize ?? 0), version: r.version ?? '' };
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
 * Checks a snapshot as its bytes pass: etcd appends the sha256 of the database as the last 32
 * bytes, so they are held back until more come, and compared at the end.
 */
export class SnapshotCheck {
  private readonly db = createHash('sha256');
  private tail = Buffer.alloc(0);
  /** Bytes of the database, the digest not counted. */
  bytes = 0;

  update(b: Buffer): void {
    const all = this.tail.length ? Buffer.concat([this.tail, b]) : b;
    const keep = Math.min(32, all.length);
    const body = all.subarray(0, all.length - keep);
    this.tail = Buffer.from(all.subarray(all.length - keep));
    this.db.update(body);
    this.bytes += body.length;
  }

  /** etcd's appended digest (hex) when it matches the database, else undefined. */
  done(): string | undefined {
    return this.tail.length === 32 && this.tail.equals(this.db.digest()) ? this.tail.toString('hex') : undefined;
  }
}

export interface SnapshotSink {
  /** Each piece of the snapshot as it arrives, in order; the next waits for it. */
  write(b: Buffer): Promise<void>;
}

/**
 * Streams a snapshot of the member at `ip` through the JSON gateway into `sink`, decoding as the
 * messages arrive (one line of JSON each, a base64 blob of up to 32 KiB of the database), and checks
 * the sha256 etcd appends as its last 32 bytes. The sink gets every byte, the digest included (as
 * `etcdutl snapshot restore` wants the file). Returns the database's size (without the digest) and
 * the hex digest etcd appended.
 */
export async function snapshotStream(t: EtcdTls, ip: string, sink: SnapshotSink, timeoutMs = 600_000): Promise<{ bytes: number; dbSha256: string }> {
  const check = new SnapshotCheck();
  const take = async (blob: Buffer) => {
    check.update(blob);
    await sink.write(blob);
  };
  const messageOf = (line: string): Buffer => {
    let m: { result?: { blob?: string }; error?: { message?: string } };
    try {
      m = JSON.parse(line) as typeof m;
    } catch {
      throw new Error(`etcd ${ip} snapshot: a message that is not JSON (${line.slice(0, 80)})`);
    }
    if (m.error) throw new Error(`etcd ${ip} snapshot: ${m.error.message ?? 'error'}`);
    return Buffer.from(m.result?.blob ?? '', 'base64');
  };
  await new Promise<void>((resolve, reject) => {
    const req = https.request({ ...etcdEndpoint(ip), path: '/v3/maintenance/snapshot', method: 'POST', ca: t.ca, cert: t.cert, key: t.key, timeout: timeoutMs, headers: { 'content-type': 'application/json', 'content-length': 2 } }, (res) => {
      if ((res.statusCode ?? 500) >= 300) {
        res.resume();
        return reject(new Error(`etcd ${ip} snapshot: HTTP ${res.statusCode}`));
      }
      let line = '';
      let chain = Promise.resolve();
      let failed = false;
      const fail = (e: Error) => {
        if (failed) return;
        failed = true;
        req.destroy(e);
        reject(e);
      };
      res.on('data', (d: Buffer) => {
        if (failed) return;
        line += d.toString('utf8');
        const lines: string[] = [];
        let nl: number;
        while ((nl = line.indexOf('\n')) >= 0) {
          const one = line.slice(0, nl).trim();
          line = line.slice(nl + 1);
          if (one) lines.push(one);
        }
        if (!lines.length) return;
        // Backpressure: no more from etcd until the sink has taken these.
        res.pause();
        chain = chain.then(async () => {
          for (const one of lines) await take(messageOf(one));
        }).then(() => void res.resume(), fail);
      });
      res.on('end', () => chain.then(() => (line.trim() && !failed ? take(messageOf(line.trim())) : undefined)).then(() => (failed ? undefined : resolve()), fail));
      res.on('error', fail);
    });
    req.on('timeout', () => req.destroy(new Error(`etcd ${ip} snapshot took over ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end('{}');
  });
  const dbSha256 = check.done();
  if (!dbSha256) {
    throw new IntegrityError(Codes.snapshotDamaged, `the etcd snapshot from ${ip} does not match the sha256 etcd appended to it`, { hint: 'Check etcd (ferry status) and run the same command again.' });
  }
  return { bytes: check.bytes, dbSha256 };
}

/**
 * Streams a snapshot of the member at `ip` into `file` (0600; written beside it and renamed when
 * whole), checked against the sha256 etcd appends. Returns the size of the database and the hex
 * digest of the whole file.
 */
export async function snapshotTo(t: EtcdTls, ip: string, file: string, timeoutMs = 600_000): Promise<{ bytes: number; sha256: string }> {
  const { createWriteStream, promises: fsp } = await import('node:fs');
  const tmp = `${file}.part`;
  const out = createWriteStream(tmp, { mode: 0o600 });
  const whole = createHash('sha256');
  let r: { bytes: number };
  try {
    r = await snapshotStream(t, ip, { write: (b) => (whole.update(b), new Promise<void>((ok, no) => out.write(b, (e) => (e ? no(e) : ok())))) }, timeoutMs);
    await new Promise<void>((ok, no) => out.end((e?: Error | null) => (e ? no(e) : ok())));
  } catch (e) {
    out.destroy();
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await fsp.rename(tmp, file);
  return { bytes: r.bytes, sha256: whole.digest('hex') };
}
