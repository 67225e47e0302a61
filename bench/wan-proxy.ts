import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export interface WanLink {
  /** Added before each request is forwarded: the round trip every request pays. */
  delayMs: number;
  /** Response bytes per second on each client connection. */
  bytesPerSec: number;
}

/**
 * The stand-in for the internet in bench/pull --wan: a reverse proxy on loopback in front of a
 * registry. Every request waits `delayMs` before it is forwarded, and each client connection
 * receives at most `bytesPerSec`, so a client gains only by using more connections at once.
 * It runs in its own process: the bench times its clients with spawnSync, which would stall it.
 */
export async function startWanProxy(upstream: string, link: WanLink): Promise<{ host: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), upstream, String(link.delayMs), String(link.bytesPerSec)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  return {
    host: line.toString().trim(),
    async stop() {
      child.kill();
      if (child.exitCode === null) await once(child, 'exit');
    },
  };
}

async function serve(upstream: string, link: WanLink): Promise<string> {
  const [uhost, uport] = upstream.split(':');
  const agent = new http.Agent({ keepAlive: true });
  const next = new WeakMap<Socket, number>();
  const server = http.createServer(async (req, res) => {
    await sleep(link.delayMs);
    const { connection: _c, ...headers } = req.headers;
    const up = http.request({ host: uhost, port: Number(uport), method: req.method, path: req.url, headers, agent }, async (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      const sock = req.socket;
      try {
        for await (const chunk of ur as AsyncIterable<Buffer>) {
          for (let off = 0; off < chunk.length; off += 64 << 10) {
            const piece = chunk.subarray(off, off + (64 << 10));
            const now = performance.now();
            const at = Math.max(now, next.get(sock) ?? now);
            next.set(sock, at + (piece.length / link.bytesPerSec) * 1000);
            if (at - now > 1) await sleep(at - now);
            if (!res.write(piece)) await once(res, 'drain');
          }
        }
        res.end();
      } catch {
        res.destroy();
      }
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [upstream, delayMs, bytesPerSec] = process.argv.slice(2);
  console.log(await serve(upstream!, { delayMs: Number(delayMs), bytesPerSec: Number(bytesPerSec) }));
}
