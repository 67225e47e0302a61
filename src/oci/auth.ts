import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Codes, RegistryError, UsageError } from '../errors.js';
import { DOCKER_HUB } from './reference.js';

export interface Credential {
  username: string;
  password: string;
}

/** Where docker (and podman, skopeo) keep registry logins. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DOCKER_CONFIG || path.join(os.homedir(), '.docker');
  return path.join(dir, 'config.json');
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** docker config keys come in many spellings: with scheme, with /v1/, with index.docker.io. */
function configKeysFor(registry: string): string[] {
  const keys = [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/v1/`, `https://${registry}/v2/`];
  if (registry === DOCKER_HUB) keys.push('https://index.docker.io/v1/', 'index.docker.io', 'registry-1.docker.io');
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
      m.set(host === 'index.docker.io' ? DOCKER_HUB : host, { username: up.slice(0, c), password: up.slice(c + 1) });
    }
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
      const c = await runCredHelper(helper, registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry);
      if (c) return c;
    }
    for (const [k, v] of Object.entries(cfg.auths ?? {})) {
      if (!keys.includes(k) && !keys.includes(normaliseKey(k)) && normaliseKey(k) !== registry) continue;
      if (v.auth) {
        const dec = Buffer.from(v.auth, 'base64').toString('utf8');
        const i = dec.indexOf(':');
        if (i > 0) return { username: dec.slice(0, i), password: dec.slice(i + 1) };
      }
      if (v.username && v.password) return { username: v.username, password: v.password };
    }
    return undefined;
  }
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
