import { spawn } from 'node:child_process';
import { constants as fsConstants, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Codes, RegistryError, UsageError } from '../errors.js';
import { getWithRetries, readBody, RetryableStatusError, type HttpResponse, type RetryPolicy } from '../util/http.js';
import { DOCKER_HUB, DOCKER_HUB_API, isLoopbackHost, normalizeRegistry } from './reference.js';

/*
 * Registry auth, the whole flow: credentials (--creds, the docker config, credential helpers),
 * WWW-Authenticate challenges, and bearer tokens from the realm a challenge names.
 */

export interface Credential {
  username: string;
  password: string;
}

/** Where docker (and podman, skopeo) keep registry logins. */
function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DOCKER_CONFIG || path.join(os.homedir(), '.docker');
  return path.join(dir, 'config.json');
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** The key docker itself writes for Docker Hub, and gives its credential helpers. */
const DOCKER_HUB_KEY = 'https://index.docker.io/v1/';

/** docker config keys come in many spellings: with scheme, with /v1/, with index.docker.io. */
function configKeysFor(registry: string): string[] {
  const keys = [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/v1/`, `https://${registry}/v2/`];
  if (registry === DOCKER_HUB) keys.push(DOCKER_HUB_KEY, 'index.docker.io', DOCKER_HUB_API);
  return keys;
}

function normaliseKey(k: string): string {
  return k.replace(/^https?:\/\//, '').replace(/\/v[12]\/?$/, '').replace(/\/$/, '');
}

/**
 * Credentials in order: `--creds` for that registry, then `--creds` with no registry, then the
 * docker config (auths, credHelpers, credsStore). Nothing is read until a registry asks for it.
 */
export class CredentialStore {
  private config: Promise<DockerConfig | undefined> | undefined;

  constructor(
    private readonly explicit: Map<string, Credential> = new Map(),
    private readonly configPath: string = dockerConfigPath(),
  ) {}

  /** Parses `--creds [REGISTRY=]USER:PASS`. */
  static parseCreds(values: string[]): Map<string, Credential> {
    const m = new Map<string, Credential>();
    for (const v of values) {
      const eq = v.indexOf('=');
      // A registry may carry a port (127.0.0.1:5000=user:pass), so look at what stands before '='.
      const hasHost = eq > 0 && /^[A-Za-z0-9.-]+(:\d+)?$|^\[[0-9a-fA-F:]+\](:\d+)?$/.test(v.slice(0, eq));
      const host = hasHost ? v.slice(0, eq) : '*';
      const up = hasHost ? v.slice(eq + 1) : v;
      const c = up.indexOf(':');
      if (c <= 0) {
        throw new UsageError(Codes.credsInvalid, `--creds "${hasHost ? `${host}=` : ''}${up.slice(0, Math.max(c, 0)) || '…'}" is not USER:PASSWORD`, {
          hint: 'Write --creds user:password, or --creds registry.example=user:password for one registry.',
        });
      }
      m.set(normalizeRegistry(host), { username: up.slice(0, c), password: up.slice(c + 1) });
    }
    return m;
  }

  /**
   * Reads `--creds-file [REGISTRY=]FILE`: `USER:PASSWORD` on one line, or a docker config.json's
   * `auths` (every registry it names). Refused, as ssh refuses a private key, when group or others
   * may read it: a password file is a secret on disk.
   */
  static async readCredsFile(value: string): Promise<Map<string, Credential>> {
    const eq = value.indexOf('=');
    const hasHost = eq > 0 && /^[A-Za-z0-9.-]+(:\d+)?$|^\[[0-9a-fA-F:]+\](:\d+)?$/.test(value.slice(0, eq));
    const host = hasHost ? value.slice(0, eq) : '*';
    const file = hasHost ? value.slice(eq + 1) : value;
    const text = await readSecretFile(file);
    const m = new Map<string, Credential>();
    if (text.trimStart().startsWith('{')) {
      let cfg: unknown;
      try {
        cfg = JSON.parse(text);
      } catch (e) {
        throw new UsageError(Codes.credsInvalid, `--creds-file ${file} is not valid JSON`, { hint: 'Give USER:PASSWORD on one line, or a docker config.json with auths.', cause: e });
      }
      for (const [k, cred] of configAuths(cfg, `--creds-file ${file}`)) if (cred) m.set(normalizeRegistry(normaliseKey(k)), cred);
      if (!m.size) throw new UsageError(Codes.credsInvalid, `--creds-file ${file} holds no auths with a user and password`, { hint: 'A docker config.json lists them under auths: {"registry": {"auth": base64 of USER:PASSWORD}}.' });
      return m;
    }
    const line = text.replace(/\r?\n$/, '');
    const c = line.indexOf(':');
    if (c <= 0 || line.includes('\n')) throw new UsageError(Codes.credsInvalid, `--creds-file ${file} does not hold USER:PASSWORD on one line`, { hint: 'Write the file as user:password (one line), or give a docker config.json.' });
    m.set(normalizeRegistry(host), { username: line.slice(0, c), password: line.slice(c + 1) });
    return m;
  }

  private loadConfig(): Promise<DockerConfig | undefined> {
    this.config ??= (async () => {
      let text: string;
      try {
        text = await fs.readFile(this.configPath, 'utf8');
      } catch {
        return undefined;
      }
      try {
        return JSON.parse(text) as DockerConfig;
      } catch (e) {
        throw new UsageError(Codes.credsInvalid, `${this.configPath} is not valid JSON`, {
          hint: 'Fix or move the docker config file, or pass --creds.',
          cause: e,
        });
      }
    })();
    return this.config;
  }

  async get(registry: string): Promise<Credential | undefined> {
    const direct = this.explicit.get(registry) ?? this.explicit.get('*');
    if (direct) return direct;
    const cfg = await this.loadConfig();
    if (!cfg) return undefined;
    const keys = configKeysFor(registry);
    const helper = cfg.credHelpers?.[registry] ?? cfg.credsStore;
    if (helper) {
      const c = await runCredHelper(helper, registry === DOCKER_HUB ? DOCKER_HUB_KEY : registry);
      if (c) return c;
    }
    for (const [k, cred] of configAuths(cfg, this.configPath)) {
      if (!keys.includes(k) && !keys.includes(normaliseKey(k)) && normaliseKey(k) !== registry) continue;
      if (cred) return cred;
    }
    return undefined;
  }
}

/** A credentials file may hold a docker config with every auth in it; more is not a credentials file. */
const MAX_CREDS_FILE = 1 << 20;

/**
 * Reads a file that holds a secret: a regular file (a FIFO or a device would block or never end),
 * readable by its owner alone, judged on the descriptor that is then read, so that nothing can be
 * swapped in between the check and the read.
 */
async function readSecretFile(file: string): Promise<string> {
  const invalid = (why: string, hint: string, cause?: unknown) => new UsageError(Codes.credsInvalid, `--creds-file ${file} ${why}`, { hint, cause });
  let fh: FileHandle;
  try {
    // O_NONBLOCK: opening a FIFO for reading waits for a writer otherwise, before any check can run.
    fh = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (e) {
    throw invalid(`cannot be read: ${(e as Error).message}`, 'Check the path: the file holds USER:PASSWORD, or is a docker config.json.', e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw invalid('is not a regular file', 'Give a regular file that holds USER:PASSWORD, or a docker config.json; a pipe or device is refused.');
    if (st.mode & 0o077) {
      throw new UsageError(Codes.credsInvalid, `--creds-file ${file} is open to other users (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): it holds a password`, {
        hint: `Make it readable by you alone: chmod 600 ${file}`,
      });
    }
    if (st.size > MAX_CREDS_FILE) throw invalid(`is ${st.size} bytes, more than a credentials file holds (${MAX_CREDS_FILE})`, 'Give the file that holds USER:PASSWORD, or a docker config.json.');
    const buf = Buffer.alloc(st.size);
    let at = 0;
    while (at < buf.length) {
      const { bytesRead } = await fh.read(buf, at, buf.length - at, at);
      if (!bytesRead) break;
      at += bytesRead;
    }
    return buf.subarray(0, at).toString('utf8');
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw invalid(`cannot be read: ${(e as Error).message}`, 'Check the path: the file holds USER:PASSWORD, or is a docker config.json.', e);
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * The `auths` of a docker config, each with the credential it holds (undefined for an entry with
 * none, such as an identity token). Whatever is not the shape docker writes is refused by name.
 */
const kind = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : `a ${typeof v}`);

function configAuths(cfg: unknown, where: string): Array<[string, Credential | undefined]> {
  const bad = (what: string) =>
    new UsageError(Codes.credsInvalid, `${where}: ${what}`, { hint: 'A docker config.json lists logins as auths: {"registry": {"auth": "base64 of USER:PASSWORD"}} or {"username": ..., "password": ...}, each a string.' });
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw bad('is not a JSON object');
  const auths = (cfg as { auths?: unknown }).auths;
  if (auths === undefined) return [];
  if (typeof auths !== 'object' || auths === null || Array.isArray(auths)) throw bad('auths is not an object');
  const out: Array<[string, Credential | undefined]> = [];
  for (const [k, v] of Object.entries(auths as Record<string, unknown>)) {
    const name = JSON.stringify(k.slice(0, 200));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`auths.${name} is ${kind(v)}, not an object`);
    const e = v as Record<string, unknown>;
    for (const f of ['auth', 'username', 'password', 'identitytoken']) {
      if (e[f] !== undefined && typeof e[f] !== 'string') throw bad(`auths.${name}.${f} is ${kind(e[f])}, not a string`);
    }
    const { auth, username, password } = e as { auth?: string; username?: string; password?: string };
    const dec = auth ? Buffer.from(auth, 'base64').toString('utf8') : '';
    const i = dec.indexOf(':');
    out.push([k, i > 0 ? { username: dec.slice(0, i), password: dec.slice(i + 1) } : username && password ? { username, password } : undefined]);
  }
  return out;
}

/** Runs `docker-credential-<helper> get`, the protocol docker uses. A missing helper means no creds. */
function runCredHelper(helper: string, server: string): Promise<Credential | undefined> {
  return new Promise((resolve) => {
    const p = spawn(`docker-credential-${helper}`, ['get'], { stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    p.on('error', () => resolve(undefined));
    p.on('close', (code) => {
      if (code !== 0) return resolve(undefined);
      try {
        const j = JSON.parse(out) as { Username?: string; Secret?: string };
        resolve(j.Username && j.Secret ? { username: j.Username, password: j.Secret } : undefined);
      } catch {
        resolve(undefined);
      }
    });
    p.stdin.end(server);
  });
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (RFC 7235 auth-params). */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z][\w-]*)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!))) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  return { scheme: m[1]!.toLowerCase(), params };
}

export function authError(registry: string, status: number, detail: string, hadCreds: boolean): RegistryError {
  return new RegistryError(
    status === 403 ? Codes.regDenied : Codes.regAuth,
    `${registry} refused access (${status}): ${detail}`,
    {
      status,
      hint: hadCreds
        ? `The credentials for ${registry} were rejected or lack permission. Check them in --creds or ${dockerConfigPath()}.`
        : `${registry} needs credentials. Pass --creds ${registry}=USER:PASSWORD, or log in so that ${dockerConfigPath()} holds them.`,
    },
  );
}

const basic = (c: Credential) => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;

interface AuthState {
  scheme: 'basic' | 'bearer';
  realm?: string;
  service?: string;
}

export interface AuthTransport {
  retry: RetryPolicy;
  ca?: string | Buffer;
  timeoutMs: number;
  userAgent: string;
  /** Hosts that may be reached over plain HTTP (`--insecure-registry`): here, token realms. */
  insecure: ReadonlySet<string>;
  /** `--verbose`: where credentials go (hosts only, never a secret). */
  log?: (msg: string) => void;
}

/**
 * How each registry wants to be asked, learnt from its 401 challenges, and the answer: basic
 * credentials, or a bearer token from the challenge's realm, cached per scope and fetched once
 * however many requests wait for it. Keyed by the host whose credentials apply.
 */
export class RegistryAuth {
  private readonly states = new Map<string, AuthState>();
  private readonly tokens = new Map<string, { token: string; expires: number }>();
  private readonly tokenFetches = new Map<string, Promise<string>>();
  private readonly logged = new Set<string>();

  constructor(
    readonly creds: CredentialStore,
    private readonly net: AuthTransport,
  ) {}

  /** Says once per destination where the credentials of `authHost` go. */
  private say(key: string, msg: string): void {
    if (this.logged.has(key)) return;
    this.logged.add(key);
    this.net.log?.(msg);
  }

  /**
   * The Authorization header for a request under `scope` to `registryHost` (host[:port] the
   * request goes to), or undefined until the host asked for one.
   */
  async header(authHost: string, scope: string, insecureTls: boolean, registryHost: string = authHost): Promise<string | undefined> {
    const state = this.states.get(authHost);
    if (!state) return undefined;
    const cred = await this.creds.get(authHost);
    if (state.scheme === 'basic') {
      if (cred) this.say(`basic ${authHost} ${registryHost}`, `auth: credentials for ${authHost} go to ${registryHost} (basic)`);
      return cred ? basic(cred) : undefined;
    }
    return `Bearer ${await this.token(authHost, insecureTls, state, scope, cred, registryHost)}`;
  }

  /**
   * Learns from a 401's WWW-Authenticate how `authHost` wants to be asked, and returns the scope to
   * ask again under. Throws when asking again cannot help.
   */
  async challenged(authHost: string, wwwAuthenticate: string, scope: string | undefined, what: string): Promise<string> {
    const ch = parseChallenge(wwwAuthenticate);
    if (ch?.scheme === 'bearer') {
      this.states.set(authHost, { scheme: 'bearer', realm: ch.params.realm, service: ch.params.service });
      // Use the scope the server asked for when we had none in mind (e.g. /v2/ ping).
      return scope === undefined || scope === '' ? (ch.params.scope ?? '') : scope;
    }
    if (ch?.scheme === 'basic') {
      this.states.set(authHost, { scheme: 'basic' });
      if (!(await this.creds.get(authHost))) throw authError(authHost, 401, `${what} needs a login`, false);
      return scope ?? '';
    }
    throw authError(authHost, 401, `${what} was refused with no usable challenge`, false);
  }

  private token(authHost: string, insecureTls: boolean, state: AuthState, scope: string, cred: Credential | undefined, registryHost: string): Promise<string> {
    const key = `${authHost}|${scope}`;
    const cached = this.tokens.get(key);
    if (cached && cached.expires > Date.now()) return Promise.resolve(cached.token);
    const inflight = this.tokenFetches.get(key);
    if (inflight) return inflight;
    const p = this.fetchToken(authHost, insecureTls, state, scope, cred, registryHost)
      .then(({ token, ttl }) => {
        this.tokens.set(key, { token, expires: Date.now() + ttl * 1000 });
        return token;
      })
      .finally(() => this.tokenFetches.delete(key));
    this.tokenFetches.set(key, p);
    return p;
  }

  /**
   * Asks the realm for a token. Like Docker, credentials go to a realm on another host when it
   * speaks https; over plain HTTP they go only to the registry's own host (loopback or
   * --insecure-registry), never elsewhere. Transport failures are thrown as they are.
   */
  private async fetchToken(authHost: string, insecureTls: boolean, state: AuthState, scope: string, cred: Credential | undefined, registryHost: string): Promise<{ token: string; ttl: number }> {
    if (!state.realm) throw new RegistryError(Codes.regProtocol, `${authHost} asked for a bearer token without a realm`);
    let u: URL;
    try {
      u = new URL(state.realm);
    } catch {
      throw new RegistryError(Codes.regProtocol, `${authHost} named a token realm that is not a URL: ${state.realm.slice(0, 200)}`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new RegistryError(Codes.regProtocol, `${authHost} named a token realm that is not http(s): ${u.protocol}`);
    if (state.service) u.searchParams.set('service', state.service);
    for (const s of scope.split(' ').filter(Boolean)) u.searchParams.append('scope', s);
    const sameHost = u.hostname === new URL(`http://${registryHost}`).hostname;
    if (u.protocol === 'http:' && cred && !sameHost) {
      throw new RegistryError(Codes.regInsecure, `token realm ${u.origin} of ${authHost} is plain HTTP on another host; ferry sends credentials in the clear to no host but the registry`, {
        hint: `Ask the operator of ${authHost} for an https token realm, or run without credentials for anonymous access.`,
      });
    }
    if (u.protocol === 'http:' && !isLoopbackHost(u.host) && !this.net.insecure.has(u.host)) {
      throw new RegistryError(Codes.regInsecure, `token realm ${u.origin} uses plain HTTP`, {
        hint: `Refusing to send credentials in the clear. Pass --insecure-registry ${u.host} to allow it.`,
      });
    }
    const headers: Record<string, string> = { 'user-agent': this.net.userAgent, accept: 'application/json' };
    if (cred) headers.authorization = basic(cred);
    const elsewhere = sameHost ? '' : `, another host than the registry ${registryHost}`;
    this.say(`token ${authHost} ${u.host} ${!!cred}`, cred ? `auth: credentials for ${authHost} go to ${u.host} (token realm ${u.protocol.slice(0, -1)}${elsewhere})` : `auth: an anonymous token for ${authHost} comes from ${u.host}${elsewhere}`);
    let res: HttpResponse;
    try {
      res = await getWithRetries(u, { headers, insecureTls, ca: this.net.ca, timeoutMs: this.net.timeoutMs, retry: this.net.retry });
    } catch (e) {
      throw e instanceof RetryableStatusError ? new Error(`token endpoint answered ${e.status}`) : e;
    }
    const body = await readBody(res, 1 << 20);
    const where = `token endpoint ${u.origin}${u.pathname}`;
    if (res.status === 401 || res.status === 403) throw authError(authHost, res.status, `${where} refused ${cred ? 'the credentials' : 'anonymous access'}`, !!cred);
    if (res.status !== 200) throw new RegistryError(Codes.regAuth, `${where} answered ${res.status}`, { status: res.status });
    let j: { token?: string; access_token?: string; expires_in?: number };
    try {
      j = JSON.parse(body.toString('utf8'));
    } catch (e) {
      throw new RegistryError(Codes.regProtocol, `${where} did not answer JSON`, { cause: e });
    }
    const token = j.token ?? j.access_token;
    if (!token) throw new RegistryError(Codes.regProtocol, `${where} answered without a token`);
    // Refresh a little early; the spec's default lifetime is 60 s.
    return { token, ttl: Math.max(10, (j.expires_in ?? 60) - 10) };
  }
}
