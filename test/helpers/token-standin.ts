import type http from 'node:http';
import { randomBytes } from 'node:crypto';
import type { FaultProxy } from './proxy.js';

/**
 * A stand-in for a bearer-token service (what Docker Hub and GHCR use), because the distribution
 * registry's simple modes have none. It installs a gate on the fault proxy: /token issues tokens
 * for Basic credentials, and /v2/ requests need a token whose scope covers the repository.
 */
export interface TokenStandIn {
  tokenRequests: { scope: string[]; user?: string }[];
}

export function installTokenStandIn(proxy: FaultProxy, creds: { user: string; pass: string }): TokenStandIn {
  const tokens = new Map<string, Set<string>>();
  const state: TokenStandIn = { tokenRequests: [] };
  proxy.gate = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', `http://${proxy.host}`);
    if (url.pathname === '/token') {
      const scope = url.searchParams.getAll('scope');
      const auth = req.headers.authorization ?? '';
      const dec = auth.startsWith('Basic ') ? Buffer.from(auth.slice(6), 'base64').toString() : '';
      state.tokenRequests.push({ scope, user: dec.split(':')[0] || undefined });
      if (dec !== `${creds.user}:${creds.pass}`) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ details: 'incorrect username or password' }));
        return true;
      }
      const token = randomBytes(16).toString('hex');
      tokens.set(token, new Set(scope.flatMap((s) => {
        const [, name, actions] = s.split(':');
        return (actions ?? '').split(',').map((a) => `${name}:${a}`);
      })));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token, expires_in: 300 }));
      return true;
    }
    const m = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(url.pathname);
    if (!m) return false;
    const action = req.method === 'GET' || req.method === 'HEAD' ? 'pull' : 'push';
    const need = `${m[1]}:${action}`;
    const tok = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    if (tokens.get(tok)?.has(need)) {
      delete req.headers.authorization; // the registry behind runs without auth
      return false;
    }
    res.writeHead(401, {
      'content-type': 'application/json',
      'www-authenticate': `Bearer realm="http://${proxy.host}/token",service="stand-in",scope="repository:${m[1]}:${action === 'pull' ? 'pull' : 'pull,push'}"`,
    });
    res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
    return true;
  };
  return state;
}
