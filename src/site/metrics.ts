// The site service's counters: requests by route, method and status, bytes sent, refused connections.

export type Route = 'base' | 'manifest' | 'blob' | 'tags' | 'catalog' | 'files' | 'files_index' | 'healthz' | 'metrics' | 'other';
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

export class Metrics {
  readonly requests = new Map<string, number>();
  readonly bytes = new Map<string, number>();
  readonly clientErrors = new Map<string, number>();
  inFlight = 0;

  count(route: Route, method: string, status: number, bytes: number): void {
    const m = METHODS.has(method) ? method : 'other';
    const k = `route="${route}",method="${m}",status="${status}"`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
    this.bytes.set(route, (this.bytes.get(route) ?? 0) + bytes);
  }

  clientError(reason: string): void {
    this.clientErrors.set(reason, (this.clientErrors.get(reason) ?? 0) + 1);
  }

  render(): string {
    const lines = [
      '# HELP ferry_serve_requests_total HTTP requests answered, by route, method and status.',
      '# TYPE ferry_serve_requests_total counter',
      ...[...this.requests].sort().map(([k, v]) => `ferry_serve_requests_total{${k}} ${v}`),
      '# HELP ferry_serve_sent_bytes_total Response body bytes sent, by route.',
      '# TYPE ferry_serve_sent_bytes_total counter',
      ...[...this.bytes].sort().map(([k, v]) => `ferry_serve_sent_bytes_total{route="${k}"} ${v}`),
      '# HELP ferry_serve_requests_in_flight Requests being answered now.',
      '# TYPE ferry_serve_requests_in_flight gauge',
      `ferry_serve_requests_in_flight ${this.inFlight}`,
      '# HELP ferry_serve_client_errors_total Connections refused for malformed requests, oversized headers or timeouts.',
      '# TYPE ferry_serve_client_errors_total counter',
      ...[...this.clientErrors].sort().map(([k, v]) => `ferry_serve_client_errors_total{reason="${k}"} ${v}`),
    ];
    return `${lines.join('\n')}\n`;
  }
}
