import { createReadStream, promises as fs } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';

/**
 * A plain static file server on loopback for download tests (binaries, a Helm repository). It is
 * an ordinary web server, not a stand-in for any protocol beyond HTTP GET with Range.
 */
export interface StaticServer {
  url: string;
  requests: { url: string; range?: string }[];
  close(): Promise<void>;
}

export async function serveDir(root: string): Promise<StaticServer> {
  const requests: StaticServer['requests'] = [];
  const server = http.createServer(async (req, res) => {
    requests.push({ url: req.url ?? '', range: req.headers.range });
    const p = path.join(root, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (!p.startsWith(root)) return res.writeHead(403).end();
    try {
      const st = await fs.stat(p);
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      if (m && Number(m[1]) < st.size) {
        res.writeHead(206, { 'content-length': st.size - Number(m[1]), 'content-range': `bytes ${m[1]}-${st.size - 1}/${st.size}` });
        createReadStream(p, { start: Number(m[1]) }).pipe(res);
      } else {
        res.writeHead(200, { 'content-length': st.size });
        createReadStream(p).pipe(res);
      }
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
