import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixtureSet } from '../../fixtures/images.js';
import { ferry } from '../helpers/cli.js';
import { execFileP, pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { writeSpec } from '../helpers/spec.js';

/*
 * Issue 10 item 15: registry credentials go to a token realm on another host, as Docker does,
 * but only over https; over plain HTTP they go to no host but the registry's own. --verbose says
 * where credentials go, by host, and never shows a secret. The registry is docker-registry behind
 * a bearer gate; token services listen on 127.0.0.1 (the registry's host) and 127.0.0.2 (another).
 */
const USER = 'carol';
const PASS = `pw-${randomBytes(6).toString('hex')}`;
const SECRETS = [PASS, Buffer.from(`${USER}:${PASS}`).toString('base64')];

let work: string;
let reg: RegistryPeer;
let gate: { host: string; realm: string; close(): Promise<void> };
let caFile: string;
const tokens = new Set<string>();
/** Every request a token service saw: which service, and whether it carried credentials. */
const seen: { service: string; authorized: boolean }[] = [];
const realms: Record<string, string> = {};
const servers: (http.Server | https.Server)[] = [];

/** A token service: tokens for the right credentials, and anonymous ones (pull is public). */
function tokenHandler(service: string): http.RequestListener {
  return (req, res) => {
    const auth = req.headers.authorization ?? '';
    seen.push({ service, authorized: !!auth });
    if (auth && auth !== `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`) {
      res.writeHead(401).end();
      return;
    }
    const token = randomBytes(12).toString('hex');
    tokens.add(token);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }));
  };
}

async function listen(server: http.Server | https.Server, host: string): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, host, r));
  return (server.address() as net.AddressInfo).port;
}

beforeAll(async () => {
  work = await tmpdir('ferry-realm-');
  reg = await startRegistry();
  await pushFixtures(await buildFixtureSet(path.join(work, 'fx'), 0.1), reg.host, 'fx');
  // A certificate for the https token service on the other host, from stock openssl.
  caFile = path.join(work, 'realm.pem');
  const keyFile = path.join(work, 'realm.key');
  await execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', caFile, '-days', '1', '-subj', '/CN=127.0.0.2', '-addext', 'subjectAltName=IP:127.0.0.2']);
  const tls = { key: await fs.readFile(keyFile), cert: await fs.readFile(caFile) };
  realms.httpsOther = `https://127.0.0.2:${await listen(https.createServer(tls, tokenHandler('https-other')), '127.0.0.2')}/token`;
  realms.httpOther = `http://127.0.0.2:${await listen(http.createServer(tokenHandler('http-other')), '127.0.0.2')}/token`;
  realms.httpSame = `http://127.0.0.1:${await listen(http.createServer(tokenHandler('http-same')), '127.0.0.1')}/token`;
  // The bearer gate in front of the registry: every /v2/ request needs a token; the challenge
  // names whichever realm the test chose.
  const state = { host: '', realm: '', close: async () => {} };
  const server = http.createServer((req, res) => {
    const tok = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    if (!tokens.has(tok)) {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${state.realm}",service="gate"`, 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'token required' }] }));
      return;
    }
    const up = http.request({ host: '127.0.0.1', port: Number(reg.host.split(':')[1]), method: req.method, path: req.url, headers: { ...req.headers, authorization: '', host: reg.host } }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  state.host = `127.0.0.1:${await listen(server, '127.0.0.1')}`;
  gate = state;
}, 120_000);

afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

async function lock(realm: string, args: string[]) {
  gate.realm = realm;
  tokens.clear();
  seen.length = 0;
  const dir = await tmpdir('ferry-realm-lock-');
  const spec = await writeSpec(dir, [`${gate.host}/fx/multi:v1`]);
  return ferry(['lock', spec, '--verbose', '--ca-file', caFile, ...args], { env: { FERRY_CACHE_DIR: path.join(dir, 'cache'), DOCKER_CONFIG: path.join(dir, 'no-docker') } });
}

const creds = () => ['--creds', `${gate.host}=${USER}:${PASS}`];

describe('where registry credentials go', () => {
  it('to an https token realm on another host, as Docker does, and --verbose names that host only', async () => {
    const r = await lock(realms.httpsOther!, creds());
    expect(r.code, r.stderr).toBe(0);
    expect(seen).toEqual([{ service: 'https-other', authorized: true }]);
    expect(r.stderr).toContain(`auth: credentials for ${gate.host} go to ${new URL(realms.httpsOther!).host} (token realm https, another host than the registry ${gate.host})`);
    for (const s of SECRETS) expect(`${r.stdout}${r.stderr}`).not.toContain(s);
  });

  it.each([
    ['without --insecure-registry', []],
    ['even with --insecure-registry for the realm', ['--insecure-registry', '127.0.0.2']],
  ])('never to a plain HTTP token realm on another host (%s): REGISTRY_INSECURE, exit 4, nothing sent', async (_what, extra) => {
    const r = await lock(realms.httpOther!, [...creds(), ...extra]);
    expect(r.stderr).toContain('error[REGISTRY_INSECURE]');
    expect(r.stderr).toMatch(/plain HTTP on another host/);
    expect(r.code).toBe(4);
    expect(seen).toEqual([]);
    for (const s of SECRETS) expect(`${r.stdout}${r.stderr}`).not.toContain(s);
  });

  it("to a plain HTTP token realm on the registry's own host (loopback), and --verbose says so", async () => {
    const r = await lock(realms.httpSame!, creds());
    expect(r.code, r.stderr).toBe(0);
    expect(seen).toEqual([{ service: 'http-same', authorized: true }]);
    expect(r.stderr).toContain(`auth: credentials for ${gate.host} go to ${new URL(realms.httpSame!).host} (token realm http)`);
    for (const s of SECRETS) expect(`${r.stdout}${r.stderr}`).not.toContain(s);
  });

  it('without credentials, an anonymous token may come from a plain HTTP realm on another loopback host', async () => {
    const r = await lock(realms.httpOther!, []);
    expect(r.code, r.stderr).toBe(0);
    expect(seen).toEqual([{ service: 'http-other', authorized: false }]);
    expect(r.stderr).toContain(`auth: an anonymous token for ${gate.host} comes from ${new URL(realms.httpOther!).host}`);
  });
});
