import { promises as fs } from 'node:fs';
import type { Command } from 'commander';
import { registryOf } from '../oci/reference.js';
import { Codes, UsageError } from '../errors.js';
import { CredentialStore, type Credential } from '../oci/auth.js';
import { RegistryClient } from '../oci/client.js';
import type { Reporter } from '../util/progress.js';
import { collect } from './shared.js';

export interface RegistryFlags {
  creds?: string[];
  credsFile?: string[];
  insecureRegistry?: string[];
  registryMirror?: string[];
  caFile?: string;
  concurrency?: string;
  retries?: string;
}

/** Parallel blob transfers by default: pushes go to one site registry, which takes fewer at once. */
export const CONCURRENCY = { pull: 6, push: 4 } as const;

export function addRegistryOptions(cmd: Command, concurrency: number = CONCURRENCY.pull): Command {
  return cmd
    .option('--creds <[registry=]user:pass>', 'credentials for a registry (repeatable); without registry= for any. Other users can see it in the process list: prefer --creds-file', collect)
    .option('--creds-file <[registry=]file>', 'read the credentials from FILE (USER:PASSWORD on one line, or a docker config.json), which must be readable by you alone (repeatable)', collect)
    .option('--insecure-registry <host>', 'allow plain HTTP or unverified TLS for this host (repeatable)', collect)
    .option('--registry-mirror <upstream=url>', 'fetch bytes for UPSTREAM from URL; names stay upstream (repeatable)', collect)
    .option('--ca-file <pem>', 'also trust the CA certificates in this PEM file')
    .option('--concurrency <n>', 'parallel blob transfers', String(concurrency))
    .option('--retries <n>', 'attempts per request on 429, 5xx and cut connections', '5');
}

export function intOption(name: string, v: string | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(Codes.usage, `${name} must be an integer ≥ ${min}, not "${v}"`);
  return n;
}

/** --creds-file first, then --creds on top: one registry's --creds wins over a file's. */
async function explicitCreds(f: RegistryFlags): Promise<Map<string, Credential>> {
  const m = new Map<string, Credential>();
  for (const file of f.credsFile ?? []) for (const [k, v] of await CredentialStore.readCredsFile(file)) m.set(k, v);
  for (const [k, v] of CredentialStore.parseCreds(f.creds ?? [])) m.set(k, v);
  return m;
}

export async function clientFrom(f: RegistryFlags, reporter: Reporter, extra: { offline?: boolean } = {}): Promise<RegistryClient> {
  const mirrors: Record<string, string> = {};
  for (const m of f.registryMirror ?? []) {
    const i = m.indexOf('=');
    if (i <= 0) throw new UsageError(Codes.usage, `--registry-mirror "${m}" is not UPSTREAM=URL`, { hint: 'Write --registry-mirror docker.io=https://mirror.example.' });
    // Keyed as references spell the registry: index.docker.io is docker.io.
    const upstream = m.slice(0, i);
    mirrors[registryOf(upstream) ?? upstream] = m.slice(i + 1);
  }
  let ca: Buffer | undefined;
  if (f.caFile) {
    try {
      ca = await fs.readFile(f.caFile);
    } catch (e) {
      throw new UsageError(Codes.usage, `cannot read --ca-file ${f.caFile}: ${(e as Error).message}`, { cause: e });
    }
  }
  return new RegistryClient({
    credentials: new CredentialStore(await explicitCreds(f)),
    insecure: f.insecureRegistry ?? [],
    mirrors,
    ca,
    retries: intOption('--retries', f.retries, 5),
    reporter,
    ...extra,
  });
}
