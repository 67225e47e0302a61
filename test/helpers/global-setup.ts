import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { FERRY_ROOT, MODULES_LOAD_FILE, PKI_DIR, SYSCTL_FILE, SYSTEM_SITE_CA } from '../../src/install/paths.js';
import { ROOT } from './cli.js';

/** Paths only ferry writes on a host: a test that leaves one behind changed this machine. */
const HOST_PATHS = [FERRY_ROOT, '/etc/ferry', PKI_DIR, '/var/log/ferry', MODULES_LOAD_FILE, SYSCTL_FILE, SYSTEM_SITE_CA, '/etc/systemd/system/ferry-serve.service'];

/** CLI tests run bin/ferry, which loads dist/: build it once before any test file. */
export default function setup(): () => void {
  execFileSync(process.execPath, [`${ROOT}/node_modules/typescript/bin/tsc`, '-p', `${ROOT}/tsconfig.json`], { stdio: 'inherit', cwd: ROOT });
  execFileSync(process.execPath, [`${ROOT}/scripts/build-mjs.mjs`], { stdio: 'inherit', cwd: ROOT });
  const before = new Set(HOST_PATHS.filter((p) => existsSync(p)));
  return () => {
    const left = HOST_PATHS.filter((p) => existsSync(p) && !before.has(p));
    if (left.length) throw new Error(`the tests left ferry's files on this host: ${left.join(', ')} (every test must write under its own --root)`);
  };
}
