import { execFileP } from '../../fixtures/peers.js';

// The registry and process helpers live in fixtures/, where bench/ shares them; the tests keep
// importing them from here.
export { execFileP, freePort, pushFixtures, startRegistry, tmpdir, waitFor, type RegistryPeer } from '../../fixtures/peers.js';

export function which(cmd: string): Promise<boolean> {
  return execFileP('sh', ['-c', `command -v ${cmd}`]).then(
    () => true,
    () => false,
  );
}

/** Copies an image from an OCI layout into a registry with skopeo, keeping digests. */
export async function skopeoPush(layoutDir: string, name: string, dest: string, opts: { creds?: string } = {}): Promise<void> {
  await execFileP('skopeo', ['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', ...(opts.creds ? ['--dest-creds', opts.creds] : []), `oci:${layoutDir}:${name}`, `docker://${dest}`]);
}

export async function skopeoInspect(args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await execFileP('skopeo', ['inspect', ...args], { maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as Record<string, unknown>;
}
