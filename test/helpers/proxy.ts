import http from 'node:http';
import net from 'node:net';

/**
 * A fault-injecting HTTP proxy in front of the real registry. It is not a registry: every request
 * it passes is answered by docker-registry. Tests use it to count requests and to make the network
 * misbehave in ways a real link does (5xx, cut connections, corrupt bytes).
 */
export interface ProxyRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

export type Fault =
  | { kind: 'status'; status: number; match: RegExp; times: number; headers?: Record<string, string> }
  | { kind: 'cut'; match: RegExp; afterBytes: number; times: number }
  | { kind: 'corrupt'; match: RegExp; times: number };

export interface FaultProxy {
  host: string;
  requests: ProxyRequest[];
  faults: Fault[];
  /** Extra gate run before forwarding: return a response to answer it here (the bearer stand-in). */
  gate?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
  close(): Promise<void>;
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const [uhost, uport] = upstream.split(':');
  const state: FaultProxy = {
    host: '',
    requests: [],
    faults: [],
    close: async () => {},
  };
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    state.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if (state.gate && state.gate(req, res)) return;
    const fault = state.faults.find((f) => f.times > 0 && f.match.test(`${req.method} ${req.url}`));
    if (fault?.kind === 'status') {
      fault.times--;
      res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
      res.end(JSON.stringify({ errors: [{ code: 'UNKNOWN', message: 'injected fault' }] }));
      return;
    }
    if (fault) fault.times--;
    const headers = { ...req.headers, host: upstream };
    const up = http.request({ host: uhost, port: Number(uport), method: req.method, path: req.url, headers, agent }, (ur) => {
      const rh = { ...ur.headers };
      // Rewrite redirects and upload locations that name the upstream.
      if (rh.location) rh.location = rh.location.replace(`http://${upstream}`, `http://${state.host}`);
      res.writeHead(ur.statusCode ?? 502, rh);
      let sent = 0;
      let flipped = false;
      ur.on('data', (c: Buffer) => {
        if (fault?.kind === 'cut' && sent + c.length >= fault.afterBytes) {
          res.write(c.subarray(0, Math.max(0, fault.afterBytes - sent)));
          res.socket?.destroy();
          ur.destroy();
          return;
        }
        if (fault?.kind === 'corrupt' && !flipped && c.length > 0) {
          c = Buffer.from(c);
          c[Math.floor(c.length / 2)]! ^= 0xff;
          flipped = true;
        }
        sent += c.length;
        res.write(c);
      });
      ur.on('end', () => res.end());
      ur.on('error', () => res.destroy());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      agent.destroy();
      server.close(() => r());
    });
  return state;
}
