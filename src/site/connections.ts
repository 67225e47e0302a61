import { promises as fs } from 'node:fs';
import type net from 'node:net';
import type { Metrics } from './metrics.js';

/*
 * The connection cap. Every connection holds a socket and, while it streams a blob, a file: two
 * descriptors. Past the cap, a new connection takes the place of the least recently active idle one
 * (no request in flight: silent, still sending headers, or kept alive), else of a response that has
 * not drained for a while; if every connection is busy and draining, the new one is refused. The count
 * is kept per process, against that process's own open-file limit, and the cap is the service's:
 * with workers, each process keeps its share of it.
 */

/** Descriptors a process keeps for itself (stdio, epoll, the bundle's index, the libuv pool). */
const FD_RESERVE = 64;
const FDS_PER_CONNECTION = 2;
/**
 * With a generous open-file limit (the unit's LimitNOFILE=65536) memory is the bound: two 64 KiB
 * chunks a connection, 128 MB in all, and the 32 MiB pool of big reads (respond.ts). The bound is
 * the whole service's: with workers, each process gets its share (shareOf).
 */
export const DEFAULT_CEILING = 1024;
/** Fewest connections one process keeps, however many share the service's cap. */
export const MIN_SHARE = 8;

/** One process's share of a service-wide connection cap split across `workers`. */
export function shareOf(total: number, workers: number): number {
  return Math.max(MIN_SHARE, Math.floor(total / Math.max(1, workers)));
}
/** Requests one connection may have waiting behind the one being answered. */
export const MAX_PIPELINED = 64;

/** The soft open-file limit of this process (node raises it to the hard limit at start), if known. */
export async function openFileLimit(): Promise<number | undefined> {
  try {
    const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(await fs.readFile('/proc/self/limits', 'utf8'));
    if (m) return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    /* not Linux: no limit known */
  }
  return undefined;
}

/** The connections an open-file limit supports (unknown: the common 1024), two descriptors each, within the ceiling. */
export function connectionsFor(fdLimit = 1024): number {
  return Math.max(8, Math.min(DEFAULT_CEILING, Math.floor((fdLimit - FD_RESERVE) / FDS_PER_CONNECTION)));
}

interface Conn {
  /** The accepted TCP socket. */
  socket: net.Socket;
  /** What HTTP reads and writes: the socket itself, or its TLS socket once the handshake is done. */
  stream: net.Socket;
  key: string;
  /** Requests received and not yet answered. */
  busy: number;
  /** Requests received in all. */
  requests: number;
  /** When a request last arrived or the stream last drained. */
  progressAt: number;
}

type Drop = 'idle' | 'stalled' | 'refused';

interface Episode {
  since: number;
  idle: number;
  stalled: number;
  refused: number;
}

const keyOf = (s: net.Socket) => `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`;

export class ConnectionGate {
  /** Least recently active first: a Map keeps insertion order, and activity re-inserts. */
  private readonly conns = new Map<net.Socket, Conn>();
  /** TLS sockets are found by their TCP connection's addresses: node links the two only internally. */
  private readonly byKey = new Map<string, Conn>();
  private readonly byStream = new WeakMap<net.Socket, Conn>();
  private episode: Episode | undefined;

  constructor(
    readonly max: number,
    private readonly stalledMs: number,
    private readonly metrics: Metrics,
    private readonly log: (l: string) => void,
  ) {
    metrics.connectionsMax = max;
  }

  /** A new TCP connection: admitted, at the cost of an idle or stalled one when at the cap, or refused. */
  admit(socket: net.Socket): void {
    if (this.conns.size >= this.max) {
      const victim = this.victim(Date.now());
      this.dropped(victim ? (victim.busy ? 'stalled' : 'idle') : 'refused');
      if (!victim) {
        socket.destroy();
        return;
      }
      this.forget(victim);
      victim.stream.destroy();
      victim.socket.destroy();
    }
    const conn: Conn = { socket, stream: socket, key: keyOf(socket), busy: 0, requests: 0, progressAt: Date.now() };
    this.conns.set(socket, conn);
    this.byKey.set(conn.key, conn);
    this.byStream.set(socket, conn);
    this.metrics.connections = this.conns.size;
    socket.on('drain', () => (conn.progressAt = Date.now()));
    socket.once('close', () => this.closed(conn));
  }

  /** TLS: the handshake is done, and HTTP now reads and writes `tlsSocket`. */
  secured(tlsSocket: net.Socket): void {
    const conn = this.byKey.get(keyOf(tlsSocket));
    if (!conn) return;
    conn.stream = tlsSocket;
    this.byStream.set(tlsSocket, conn);
    tlsSocket.on('drain', () => (conn.progressAt = Date.now()));
  }

  /**
   * A request arrived on `stream`. Returns what to call when it is answered. A connection that
   * piles up more than MAX_PIPELINED requests is cut: each waiting one holds memory.
   */
  request(stream: net.Socket): () => void {
    const conn = this.byStream.get(stream);
    if (!conn) return () => {};
    conn.busy++;
    conn.requests++;
    conn.progressAt = Date.now();
    this.touch(conn);
    if (conn.busy > MAX_PIPELINED + 1 && !stream.destroyed) {
      this.metrics.clientError('pipelined');
      this.log(`${stream.remoteAddress ?? '-'} refused: more than ${MAX_PIPELINED} pipelined requests waiting`);
      stream.destroy();
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      conn.busy--;
      this.touch(conn);
    };
  }

  /**
   * Shutting down: closes each connection with nothing in flight that was answered before, and with
   * `fresh` also those that have sent nothing yet. Until then a new one keeps its chance: it may just
   * have been handed to this process, its first request on the way, and closing it would lose that.
   */
  closeIdle(fresh: boolean): void {
    for (const c of [...this.conns.values()]) {
      if (c.busy === 0 && (fresh || c.requests > 0)) {
        c.stream.destroy();
        c.socket.destroy();
      }
    }
  }

  /** Shutting down, out of time: closes every connection. */
  closeAll(): void {
    for (const c of [...this.conns.values()]) {
      c.stream.destroy();
      c.socket.destroy();
    }
  }

  /** The least recently active idle connection, else the longest-stalled response. */
  private victim(now: number): Conn | undefined {
    let stalled: Conn | undefined;
    for (const c of this.conns.values()) {
      if (c.busy === 0) return c;
      stalled ??= c.stream.writableNeedDrain && now - c.progressAt >= this.stalledMs ? c : undefined;
    }
    return stalled;
  }

  private touch(conn: Conn): void {
    if (!this.conns.delete(conn.socket)) return;
    this.conns.set(conn.socket, conn);
  }

  private forget(conn: Conn): void {
    this.conns.delete(conn.socket);
    if (this.byKey.get(conn.key) === conn) this.byKey.delete(conn.key);
    this.metrics.connections = this.conns.size;
  }

  private closed(conn: Conn): void {
    this.forget(conn);
    // The episode ends a little below the cap, so a count that hovers at it logs once.
    const e = this.episode;
    if (e && this.conns.size <= Math.min(this.max - 1, Math.floor(this.max * 0.9))) {
      this.episode = undefined;
      this.log(
        `connections: below the cap of ${this.max} again after ${((Date.now() - e.since) / 1000).toFixed(1)} s; meanwhile closed ${e.idle} idle and ${e.stalled} stalled connection(s) and refused ${e.refused} new one(s)`,
      );
    }
  }

  /** Counts a drop; the first one of an episode logs the one line that says what is happening. */
  private dropped(reason: Drop): void {
    this.metrics.connectionDropped(reason);
    if (!this.episode) {
      this.episode = { since: Date.now(), idle: 0, stalled: 0, refused: 0 };
      this.log(
        `connections: at the cap of ${this.max} open connections: each new one replaces the least recently active idle or stalled connection, or is refused when all are busy (counted in ferry_serve_connections_dropped_total; --max-connections sets the cap)`,
      );
    }
    this.episode[reason]++;
  }
}
