// The site service's counters: requests by route, method and status, bytes sent, refused and open connections.
// With workers, each process counts its own and the primary adds them up for /metrics.

export type Route = 'base' | 'manifest' | 'blob' | 'referrers' | 'tags' | 'catalog' | 'files' | 'files_index' | 'healthz' | 'metrics' | 'other';
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** One process's counters and gauges, as they cross IPC. */
export interface MetricsSnapshot {
  requests: [string, number][];
  bytes: [string, number][];
  clientErrors: [string, number][];
  connectionsDropped: [string, number][];
  inFlight: number;
  connections: number;
  connectionsMax: number;
  bufferBytes: number;
  bufferBytesPeak: number;
}

/** A serving process and the requests it answered, for the per-process series. */
export interface ProcessCount {
  pid: number;
  requests: number;
}

const addTo = (m: Map<string, number>, entries: Iterable<[string, number]>) => {
  for (const [k, v] of entries) m.set(k, (m.get(k) ?? 0) + v);
};

export class Metrics {
  readonly requests = new Map<string, number>();
  readonly bytes = new Map<string, number>();
  readonly clientErrors = new Map<string, number>();
  readonly connectionsDropped = new Map<string, number>();
  inFlight = 0;
  connections = 0;
  connectionsMax = 0;
  /** Bytes of response buffers held now, and at most since start: read from the pools when asked. */
  bufferBytes = 0;
  bufferBytesPeak = 0;
  /** Refreshes the gauges that are read, not counted (set by the server). */
  sample: () => void = () => {};

  count(route: Route, method: string, status: number, bytes: number): void {
    const m = METHODS.has(method) ? method : 'other';
    const k = `route="${route}",method="${m}",status="${status}"`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
    this.bytes.set(route, (this.bytes.get(route) ?? 0) + bytes);
  }

  clientError(reason: string): void {
    this.clientErrors.set(reason, (this.clientErrors.get(reason) ?? 0) + 1);
  }

  connectionDropped(reason: string): void {
    this.connectionsDropped.set(reason, (this.connectionsDropped.get(reason) ?? 0) + 1);
  }

  snapshot(): MetricsSnapshot {
    this.sample();
    return {
      requests: [...this.requests],
      bytes: [...this.bytes],
      clientErrors: [...this.clientErrors],
      connectionsDropped: [...this.connectionsDropped],
      inFlight: this.inFlight,
      connections: this.connections,
      connectionsMax: this.connectionsMax,
      bufferBytes: this.bufferBytes,
      bufferBytesPeak: this.bufferBytesPeak,
    };
  }

  /** Requests this process answered, all routes. */
  answered(): number {
    let n = 0;
    for (const v of this.requests.values()) n += v;
    return n;
  }

  /** Adds another process's counters, and its gauges unless it has stopped (`gone`). */
  add(s: MetricsSnapshot, gone = false): void {
    addTo(this.requests, s.requests);
    addTo(this.bytes, s.bytes);
    addTo(this.clientErrors, s.clientErrors);
    addTo(this.connectionsDropped, s.connectionsDropped);
    if (gone) return;
    this.inFlight += s.inFlight;
    this.connections += s.connections;
    this.connectionsMax += s.connectionsMax;
    this.bufferBytes += s.bufferBytes ?? 0;
    this.bufferBytesPeak += s.bufferBytesPeak ?? 0;
  }

  /** The text exposition; `processes` are the serving processes (this one alone without workers). */
  render(processes: ProcessCount[] = [{ pid: process.pid, requests: this.answered() }]): string {
    this.sample();
    const lines = [
      ...family('ferry_serve_requests_total', 'counter', 'HTTP requests answered, by route, method and status.', labelled(this.requests)),
      ...family('ferry_serve_sent_bytes_total', 'counter', 'Response body bytes sent, by route.', labelled(this.bytes, 'route')),
      ...family('ferry_serve_requests_in_flight', 'gauge', 'Requests being answered now.', [['', this.inFlight]]),
      ...family(
        'ferry_serve_client_errors_total',
        'counter',
        'Connections refused for malformed requests, oversized headers, timeouts, TLS failures or too many pipelined requests.',
        labelled(this.clientErrors, 'reason'),
      ),
      ...family('ferry_serve_connections', 'gauge', 'Open connections.', [['', this.connections]]),
      ...family('ferry_serve_connections_max', 'gauge', 'The connection cap: per process, summed over the workers.', [['', this.connectionsMax]]),
      ...family('ferry_serve_connections_dropped_total', 'counter', 'Connections closed at the cap to make room (idle, stalled) or refused there.', labelled(this.connectionsDropped, 'reason')),
      ...family('ferry_serve_buffer_bytes', 'gauge', 'Bytes of response buffers held by responses now (not the spare ones).', [['', this.bufferBytes]]),
      ...family('ferry_serve_buffer_bytes_peak', 'gauge', 'The most bytes of response buffers held at once since start: per process, summed over the workers.', [['', this.bufferBytesPeak]]),
      ...family('ferry_serve_workers', 'gauge', 'Processes serving now (1 without workers).', [['', processes.length]]),
      ...family(
        'ferry_serve_worker_requests_total',
        'counter',
        'Requests answered by each serving process; a process that exits takes its series along (the totals above keep its counts).',
        processes.map((p) => [`pid="${p.pid}"`, p.requests]),
      ),
    ];
    return `${lines.join('\n')}\n`;
  }
}

/** One metric family in the text exposition format: HELP, TYPE, then each sample. */
function family(name: string, type: 'counter' | 'gauge', help: string, samples: [labels: string, value: number][]): string[] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples.map(([labels, v]) => `${name}${labels ? `{${labels}}` : ''} ${v}`)];
}

/** A counter map's samples, sorted; keys are whole label sets, or the value of `label`. */
const labelled = (m: Map<string, number>, label?: string): [string, number][] => [...m].sort().map(([k, v]) => [label ? `${label}="${k}"` : k, v]);
