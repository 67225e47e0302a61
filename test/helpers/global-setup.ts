import { execFileSync } from 'node:child_process';
import { ROOT } from './cli.js';

/** CLI tests run bin/ferry, which loads dist/: build it once before any test file. */
export default function setup(): void {
  execFileSync(process.execPath, [`${ROOT}/node_modules/typescript/bin/tsc`, '-p', `${ROOT}/tsconfig.json`], { stdio: 'inherit', cwd: ROOT });
  execFileSync(process.execPath, [`${ROOT}/scripts/build-mjs.mjs`], { stdio: 'inherit', cwd: ROOT });
}
