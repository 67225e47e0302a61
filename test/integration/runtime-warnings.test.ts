import { execFile } from 'node:child_process';
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { checksumsText, INSTALL_SH } from '../../src/bundle/format.js';
import { renderServeUnit } from '../../src/install/units.js';
import { sha256Hex } from '../../src/util/digest.js';
import { execFileP, tmpdir } from '../helpers/peers.js';

/*
 * Issue 12: Node 24 warns that ferry's dependencies use punycode (DEP0040) and url.parse (DEP0169).
 * Where ferry runs under the bundled runtime (install.sh, ferry-serve.service) those two are
 * silenced and nothing else is. Run with the Node 24 the site suite bundles, when it is cached.
 */
const arch = process.arch === 'arm64' ? 'arm64' : 'amd64';
/** Triggers both warnings ferry's dependencies cause, and one that must still show. */
const SCRIPT = "import 'punycode';\nimport url from 'node:url';\nurl.parse('http://x');\nnew Buffer(1);\nconsole.log('ran', process.argv.slice(2).join(' '));\n";

let work: string;
let node24: string | undefined;

function nodeTgz(): string | undefined {
  const bin = path.join(process.env.FERRY_SITE_CACHE ?? path.join(os.homedir(), '.cache/ferry-site'), 'bin');
  const dirs = existsSync(bin) ? readdirSync(bin).filter((d) => /^node-24\./.test(d)).sort((a, b) => b.localeCompare(a, 'en', { numeric: true })) : [];
  for (const d of dirs) {
    const tgz = readdirSync(path.join(bin, d)).find((f) => f.endsWith(`-linux-${arch === 'amd64' ? 'x64' : 'arm64'}-${d.slice(5)}.tgz`));
    if (tgz) return path.join(bin, d, tgz);
  }
  return undefined;
}

function run(cmd: string, args: string[], cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => execFile(cmd, args, { cwd }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr })));
}

beforeAll(async () => {
  work = await tmpdir('ferry-warnings-');
  const tgz = nodeTgz();
  if (!tgz) return;
  await execFileP('tar', ['-xzf', tgz, '-C', work, 'package/bin/node']);
  node24 = path.join(work, 'package/bin/node');
});

describe('ferry under the bundled Node 24', () => {
  it('the script triggers DEP0040 and DEP0169 without the options (so the checks below can fail)', async (ctx) => {
    if (!node24) ctx.skip();
    const script = path.join(work, 'plain.mjs');
    await fs.writeFile(script, SCRIPT);
    const r = await run(node24!, [script]);
    expect((await run(node24!, ['--version'])).stdout).toMatch(/^v24\./);
    expect(r.stderr).toMatch(/DEP0040/);
    expect(r.stderr).toMatch(/DEP0169/);
  });

  it('install.sh silences DEP0040 and DEP0169 only, and still passes every argument on', async (ctx) => {
    if (!node24) ctx.skip();
    const dir = path.join(work, 'bundle');
    const rt = `runtime/linux-${arch}/node`;
    await fs.mkdir(path.join(dir, 'ferry'), { recursive: true });
    await fs.mkdir(path.dirname(path.join(dir, rt)), { recursive: true });
    await fs.writeFile(path.join(dir, 'install.sh'), INSTALL_SH);
    await fs.writeFile(path.join(dir, 'ferry/ferry.mjs'), SCRIPT);
    await fs.copyFile(node24!, path.join(dir, rt));
    const entries = [];
    for (const p of ['install.sh', 'ferry/ferry.mjs', rt]) entries.push({ path: p, sha256: sha256Hex(await fs.readFile(path.join(dir, p))) });
    await fs.writeFile(path.join(dir, 'checksums.txt'), checksumsText(entries));
    const r = await run('sh', ['install.sh', 'site.ferry.tar', '--trust', 'ferry.pub'], dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('ran install site.ferry.tar --trust ferry.pub\n');
    expect(r.stderr).not.toMatch(/DEP0040|DEP0169/);
    expect(r.stderr).toMatch(/DEP0005/);
  });

  it("ferry-serve.service's ExecStart runs the runtime with the same two options, and only those", async (ctx) => {
    if (!node24) ctx.skip();
    const unit = renderServeUnit({ listen: '0.0.0.0:5443', tlsCert: '/etc/ferry/pki/registry.crt', tlsKey: '/etc/ferry/pki/registry.key' });
    const exec = /^ExecStart=(.+)$/m.exec(unit)![1]!.split(' ');
    const options = exec.slice(1, exec.indexOf('/var/lib/ferry/ferry/ferry.mjs'));
    expect(options).toEqual(['--disable-warning=DEP0040', '--disable-warning=DEP0169']);
    const script = path.join(work, 'unit.mjs');
    await fs.writeFile(script, SCRIPT);
    const r = await run(node24!, [...options, script, 'serve']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/DEP0040|DEP0169/);
    expect(r.stderr).toMatch(/DEP0005/);
  });
});

describe('install.sh passes its subcommand through (issue 18)', () => {
  it('runs `install` for a bundle or an option first, as before, and any other first word as the subcommand', async () => {
    const dir = path.join(await tmpdir(), 'bundle');
    const rt = `runtime/linux-${arch}/node`;
    await fs.mkdir(path.join(dir, 'ferry'), { recursive: true });
    await fs.mkdir(path.dirname(path.join(dir, rt)), { recursive: true });
    await fs.writeFile(path.join(dir, 'install.sh'), INSTALL_SH);
    await fs.writeFile(path.join(dir, 'ferry/ferry.mjs'), "console.log('ran', process.argv.slice(2).join(' '));\n");
    await fs.copyFile(process.execPath, path.join(dir, rt));
    const entries = [];
    for (const p of ['install.sh', 'ferry/ferry.mjs', rt]) entries.push({ path: p, sha256: sha256Hex(await fs.readFile(path.join(dir, p))) });
    await fs.writeFile(path.join(dir, 'checksums.txt'), checksumsText(entries));
    const cases: [string[], string][] = [
      [['site.ferry.tar', '--trust', 'ferry.pub'], 'install site.ferry.tar --trust ferry.pub'],
      [['./site', '--trust', 'ferry.pub'], 'install ./site --trust ferry.pub'],
      [['--help'], 'install --help'],
      [[], 'install'],
      [['install', 'site.ferry.tar', '--trust', 'ferry.pub'], 'install site.ferry.tar --trust ferry.pub'],
      [['bundle', 'add', 'site-2.ferry.tar', '--trust', 'ferry.pub', '--json'], 'bundle add site-2.ferry.tar --trust ferry.pub --json'],
      [['bundle', 'list'], 'bundle list'],
    ];
    for (const [args, ran] of cases) {
      const r = await run('sh', ['install.sh', ...args], dir);
      expect([args, r.code, r.stdout], r.stderr).toEqual([args, 0, `ran ${ran}\n`]);
    }
  });
});
