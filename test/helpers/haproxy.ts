import net from 'node:net';

/** haproxy's view of the apiservers backend, from its CSV stats page: server name → UP/DOWN. */
export async function apiServerStatus(statsUrl: string): Promise<Record<string, string>> {
  const text = await (await fetch(`${statsUrl}/stats;csv`)).text();
  const [head, ...rows] = text.trim().split('\n');
  const cols = head!.replace(/^# /, '').split(',');
  const out: Record<string, string> = {};
  for (const r of rows) {
    const f = r.split(',');
    if (f[0] === 'apiservers') out[f[1]!] = f[cols.indexOf('status')]!;
  }
  return out;
}

/** Connects through the balancer and returns what the (stand-in) API server behind it said. */
export function through(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, host);
    let got = '';
    c.setTimeout(3000, () => c.destroy(new Error('no answer through haproxy in 3 s')));
    c.on('data', (d) => (got += d.toString()));
    c.on('end', () => resolve(got));
    c.on('error', reject);
  });
}
