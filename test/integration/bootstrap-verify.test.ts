import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixtureSet } from '../../fixtures/images.js';
import { sha256Hex } from '../../src/util/digest.js';
import { writeBundleSpec } from '../../fixtures/spec.js';
import { ferry } from '../helpers/cli.js';
import { execFileP, pushFixtures, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';

/**
 * Issue 10 item 1: the site's first commands use only stock tar, openssl and sha256sum with a
 * ferry.pub from another channel, so no code from a tampered bundle runs, as root, before it is
 * checked. Every case runs the very commands `ferry bundle build` printed.
 */

let work: string;
let reg: RegistryPeer;
let env: NodeJS.ProcessEnv;
let pub: string;
/** The honest single-file bundle and the script build printed for it. */
let single: { file: string; script: string };
/** The honest split bundle (parts beside FILE.parts.json) and its printed script. */
let split: { dir: string; base: string; script: string };

const MARK = 'ran-from-the-bundle';

async function write(p: string, data: string | Buffer, mode = 0o644) {
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data, { mode });
}

/** The script between the explanation and the end of the build's (or inspect's) text output. */
function printedScript(stdout: string): string {
  const lines = stdout.split('\n');
  const start = lines.findIndex((l) => /^(tar -xf |sed -n .*\| tar -xf -)/.test(l));
  const end = lines.findIndex((l, i) => i > start && l.startsWith('sh install.sh '));
  expect(start, stdout).toBeGreaterThan(-1);
  expect(end, stdout).toBeGreaterThan(start);
  return lines.slice(start, end + 1).join('\n');
}

/** Runs a script as the operator would paste it, as root, in `dir`, with no terminal. */
function sh(script: string, dir: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('sh', ['-c', script], { cwd: dir, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }));
  });
}

/** A site directory holding the bundle under its own name, and ferry.pub as it came by another channel. */
async function siteWith(name: string, files: Record<string, Buffer>): Promise<string> {
  const dir = await tmpdir(`ferry-site-${name}-`);
  for (const [f, b] of Object.entries(files)) await fs.writeFile(path.join(dir, f), b);
  await fs.copyFile(pub, path.join(dir, 'ferry.pub'));
  return dir;
}

/**
 * What an attacker does with stock tools: unpack the honest tar, change it, and pack it again in
 * the same order. `change` works in the unpacked tree.
 */
async function tampered(tarBytes: Buffer, change: (root: string) => Promise<void>): Promise<Buffer> {
  const t = await tmpdir('ferry-tamper-');
  await fs.writeFile(path.join(t, 'in.tar'), tarBytes);
  const root = path.join(t, 'x');
  await fs.mkdir(root);
  await execFileP('tar', ['-xf', path.join(t, 'in.tar'), '-C', root]);
  const { stdout } = await execFileP('tar', ['-tf', path.join(t, 'in.tar')]);
  await fs.writeFile(path.join(t, 'list'), stdout);
  await change(root);
  await execFileP('tar', ['-cf', path.join(t, 'out.tar'), '-C', root, '--no-recursion', '--owner=0', '--group=0', '--numeric-owner', '-T', path.join(t, 'list')]);
  const out = await fs.readFile(path.join(t, 'out.tar'));
  await fs.rm(t, { recursive: true, force: true });
  return out;
}

/** Every file under ferry/ and runtime/ in `dir`, relative to it, sorted. */
async function treeFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const top of ['ferry', 'runtime']) {
    for (const f of (await fs.readdir(path.join(dir, top), { recursive: true, withFileTypes: true }).catch(() => [])) as import('node:fs').Dirent[]) {
      if (!f.isDirectory()) out.push(path.relative(dir, path.join(f.parentPath, f.name)));
    }
  }
  return out.sort();
}

/** What the signed table lists under ferry/ and runtime/linux-amd64/node. */
async function listedTree(dir: string): Promise<string[]> {
  return (await fs.readFile(path.join(dir, 'checksums.txt'), 'utf8'))
    .split('\n')
    .map((l) => l.slice(66))
    .filter((f) => f.startsWith('ferry/') || f === 'runtime/linux-amd64/node')
    .sort();
}

/** A module that, if Node ever loaded it, would leave `marker` behind. */
const plantedModule = (marker: string) => `require('fs').writeFileSync(${JSON.stringify(marker)}, 'a planted module ran'); module.exports = () => ({});\n`;

const markerJs = (marker: string) => `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(marker)}, 'ferry.mjs from the bundle ran');\n`;
const markerSh = (marker: string) => `#!/bin/sh\necho "ran: $0 $*" > '${marker}'\n`;

/** Rewrites checksums.txt's line for `entry` to the hash of its (changed) content. */
async function relist(root: string, entry: string): Promise<void> {
  const sums = await fs.readFile(path.join(root, 'checksums.txt'), 'utf8');
  const hex = sha256Hex(await fs.readFile(path.join(root, entry)));
  await fs.writeFile(path.join(root, 'checksums.txt'), sums.replace(new RegExp(`^[0-9a-f]{64}  ${entry.replace(/\./g, '\\.')}$`, 'm'), `${hex}  ${entry}`));
}

beforeAll(async () => {
  work = await tmpdir('ferry-bootstrap-');
  reg = await startRegistry();
  const fx = await buildFixtureSet(path.join(work, 'fx'), 0.05);
  await pushFixtures(fx, reg.host, 'fx');
  // The runtime is a launcher of this machine's real Node, so the bundled ferry.mjs really runs. It is
  // a real x86-64 ELF (built here by gcc), as the build's runtime check demands.
  const launcher = path.join(work, 'vendor', 'node');
  const c = path.join(work, 'vendor', 'launcher.c');
  await write(c, `#include <unistd.h>\nint main(int argc, char **argv) { argv[0] = "${process.execPath}"; execv(argv[0], argv); return 127; }\n`, 0o644);
  await execFileP('gcc', ['-O2', '-o', launcher, c]);
  const spec = await writeBundleSpec(work, { name: 'boot', version: '1.0.0', platforms: ['linux/amd64'], images: [{ ref: `${reg.host}/fx/single:v1`, platforms: ['linux/amd64'] }], runtime: { 'linux/amd64': launcher } });
  env = { FERRY_CACHE_DIR: path.join(work, 'cache') };
  expect((await ferry(['key', 'generate', '--out', path.join(work, 'keys')])).code).toBe(0);
  pub = path.join(work, 'keys', 'ferry.pub');
  expect((await ferry(['lock', spec], { env })).code).toBe(0);
  const key = path.join(work, 'keys', 'ferry.key');
  const file = path.join(work, 'out', 'boot-1.0.0.ferry.tar');
  const b = await ferry(['bundle', 'build', spec, '--key', key, '--out', file], { env });
  expect(b.code, b.stderr).toBe(0);
  single = { file, script: printedScript(b.stdout) };
  const splitDir = path.join(work, 'split');
  const s = await ferry(['bundle', 'build', spec, '--key', key, '--out', path.join(splitDir, 'boot-1.0.0.ferry.tar'), '--split-size', '64KiB'], { env });
  expect(s.code, s.stderr).toBe(0);
  split = { dir: splitDir, base: 'boot-1.0.0.ferry.tar', script: printedScript(s.stdout) };
}, 120_000);

afterAll(async () => {
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('the documented first steps on the site check the bootstrap with stock tools only', () => {
  it('build prints them with the file names filled in, and inspect shows the same', async () => {
    expect(single.script).toMatch(/^tar -xf boot-1\.0\.0\.ferry\.tar .*--occurrence bundle\.json checksums\.txt checksums\.txt\.sig &&$/m);
    expect(single.script).toContain('openssl dgst -sha256 -verify ferry.pub -signature checksums.txt.der checksums.txt');
    // The content comes out by the names the verified table lists, never a directory.
    expect(single.script).toMatch(/^tar -xf boot-1\.0\.0\.ferry\.tar .*--no-recursion -T first-step\.names &&$/m);
    expect(single.script).not.toMatch(/ ferry( |$)/m);
    expect(single.script).toContain('sha256sum -c first-step.sha256');
    expect(single.script.split(' &&\n').pop()).toBe('sh install.sh install boot-1.0.0.ferry.tar --trust ferry.pub');
    // Parts are read in the order parts.json lists them, never by a glob.
    expect(split.script).toMatch(/^sed -n .* boot-1\.0\.0\.ferry\.tar\.parts\.json \| while IFS= read -r p; do cat "\$p" \|\| exit; done \| tar -xf - /);
    expect(split.script).not.toContain('cat boot-1.0.0.ferry.tar.part');
    expect(split.script.split(' &&\n').pop()).toBe('sh install.sh install boot-1.0.0.ferry.tar.parts.json --trust ferry.pub');
    const i = await ferry(['bundle', 'inspect', single.file]);
    expect(printedScript(i.stdout)).toBe(single.script);
    const j = await ferry(['bundle', 'inspect', path.join(split.dir, `${split.base}.parts.json`), '--json']);
    expect((JSON.parse(j.stdout) as { siteSteps: { script: string }[] }).siteSteps.map((x) => x.script)).toEqual([split.script]);
  });

  it('pass an honest bundle, single file and parts, through to the bundled ferry', async () => {
    const dir = await siteWith('honest', { 'boot-1.0.0.ferry.tar': await fs.readFile(single.file) });
    const r = await sh(single.script, dir);
    expect(r.out).toContain('Verified OK');
    expect(r.out).toMatch(/^ferry\/ferry\.mjs: OK$/m);
    expect(r.out).toMatch(/^runtime\/linux-amd64\/node: OK$/m);
    expect(await treeFiles(dir)).toEqual(await listedTree(dir));
    // The bundled ferry itself answered: no answers and no terminal.
    expect(r.out).toContain('error[PROMPT_NO_TTY]');
    expect(r.code).toBe(2);

    const parts: Record<string, Buffer> = {};
    for (const f of await fs.readdir(split.dir)) parts[f] = await fs.readFile(path.join(split.dir, f));
    const pdir = await siteWith('honest-parts', parts);
    const p = await sh(split.script, pdir);
    expect(p.out).toContain('Verified OK');
    expect(p.out).toContain('error[PROMPT_NO_TTY]');
  });

  // Each is a bundle an attacker made from the honest one; none may run anything it carries.
  // `trigger` runs the payload from a plain extract, to show that it would run if nothing stopped it.
  const attacks: [string, (root: string, marker: string) => Promise<void>, RegExp, string][] = [
    ['ferry/ferry.mjs replaced', async (root, m) => fs.writeFile(path.join(root, 'ferry/ferry.mjs'), markerJs(m)), /ferry\/ferry\.mjs: FAILED/, 'runtime/linux-amd64/node ferry/ferry.mjs'],
    ['the runtime replaced by a script', async (root, m) => fs.writeFile(path.join(root, 'runtime/linux-amd64/node'), markerSh(m), { mode: 0o755 }), /runtime\/linux-amd64\/node: FAILED/, 'runtime/linux-amd64/node'],
    ['install.sh replaced', async (root, m) => fs.writeFile(path.join(root, 'install.sh'), markerSh(m)), /install\.sh: FAILED/, 'sh install.sh'],
    [
      'a lazily loaded chunk replaced',
      async (root, m) => {
        const chunk = (await fs.readdir(path.join(root, 'ferry/chunks'))).sort()[0]!;
        await fs.writeFile(path.join(root, 'ferry/chunks', chunk), markerJs(m));
      },
      /ferry\/chunks\/.*: FAILED/,
      'runtime/linux-amd64/node ferry/chunks/*',
    ],
    [
      'ferry/ferry.mjs replaced and checksums.txt edited to match',
      async (root, m) => {
        await fs.writeFile(path.join(root, 'ferry/ferry.mjs'), markerJs(m));
        await relist(root, 'ferry/ferry.mjs');
      },
      /Verification failure/,
      'runtime/linux-amd64/node ferry/ferry.mjs',
    ],
    [
      'the runtime replaced and the table re-signed with another key, bundle.json naming it',
      async (root, m) => {
        await fs.writeFile(path.join(root, 'runtime/linux-amd64/node'), markerSh(m), { mode: 0o755 });
        await relist(root, 'runtime/linux-amd64/node');
        const k = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
        const manifest = JSON.parse(await fs.readFile(path.join(root, 'bundle.json'), 'utf8')) as { signer: { publicKey: string } };
        manifest.signer.publicKey = k.publicKey.export({ type: 'spki', format: 'pem' }) as string;
        await fs.writeFile(path.join(root, 'bundle.json'), `${JSON.stringify(manifest, null, 2)}\n`);
        await relist(root, 'bundle.json');
        await fs.writeFile(path.join(root, 'key.pem'), k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
        const { stdout } = await execFileP('sh', ['-c', 'openssl dgst -sha256 -sign key.pem checksums.txt | base64 -w0'], { cwd: root });
        await fs.writeFile(path.join(root, 'checksums.txt.sig'), `${stdout}\n`);
        await fs.rm(path.join(root, 'key.pem'));
      },
      /Verification failure/,
      'runtime/linux-amd64/node',
    ],
  ];

  it.each(attacks)('refuse a bundle with %s before any of it runs, single file and parts', async (name, change, why, trigger) => {
    const honest = await fs.readFile(single.file);
    const marker = path.join(work, `${MARK}-${name.replace(/\W+/g, '-')}`);
    const bad = await tampered(honest, (root) => change(root, marker));
    const dir = await siteWith('tampered', { 'boot-1.0.0.ferry.tar': bad });
    const r = await sh(single.script, dir);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(why);
    expect(r.out).not.toContain('PROMPT_NO_TTY');
    await expect(fs.access(marker)).rejects.toThrow();

    // The same bytes carried as parts: the attacker re-cuts them under the names parts.json lists.
    const files: Record<string, Buffer> = { [`${split.base}.parts.json`]: await fs.readFile(path.join(split.dir, `${split.base}.parts.json`)) };
    for (let off = 0, n = 1; off < bad.length; off += 64 * 1024, n++) files[`${split.base}.part${String(n).padStart(3, '0')}`] = bad.subarray(off, off + 64 * 1024);
    const pdir = await siteWith('tampered-parts', files);
    const p = await sh(split.script, pdir);
    expect(p.code).not.toBe(0);
    expect(p.out).toMatch(why);
    await expect(fs.access(marker)).rejects.toThrow();

    // The payload is live: extracted plainly and started, it does run.
    const plain = await siteWith('plain', { 'b.tar': bad });
    await sh(`tar -xf b.tar && ${trigger.replace('*', '$(ls ferry/chunks | sort | head -n1)')}`, plain);
    await expect(fs.access(marker)).resolves.toBeUndefined();
    await fs.rm(marker);
  });

  // Issue 21 item 1: nothing unlisted under ferry/ or runtime/ may exist or be loaded on a site.
  it('extract no entry the signed table does not list, though the signature over the table still holds', async () => {
    const marker = path.join(work, `${MARK}-unlisted-entry`);
    const honest = await fs.readFile(single.file);
    // Added to the archive, not to checksums.txt: the table, and so its signature, is untouched.
    const t = await tmpdir('ferry-extra-');
    await fs.writeFile(path.join(t, 'in.tar'), honest);
    const root = path.join(t, 'x');
    await fs.mkdir(root);
    await execFileP('tar', ['-xf', path.join(t, 'in.tar'), '-C', root]);
    const { stdout } = await execFileP('tar', ['-tf', path.join(t, 'in.tar')]);
    const planted = ['ferry/node_modules/supports-color/index.js', 'ferry/chunks/node_modules/bufferutil/index.js', 'runtime/linux-amd64/node_modules/encoding/index.js'];
    for (const f of planted) await write(path.join(root, f), plantedModule(marker));
    await fs.writeFile(path.join(t, 'list'), `${stdout}${planted.join('\n')}\n`);
    await execFileP('tar', ['-cf', path.join(t, 'out.tar'), '-C', root, '--no-recursion', '--owner=0', '--group=0', '--numeric-owner', '-T', path.join(t, 'list')]);
    const bad = await fs.readFile(path.join(t, 'out.tar'));
    await fs.rm(t, { recursive: true, force: true });

    const dir = await siteWith('unlisted-entry', { 'boot-1.0.0.ferry.tar': bad });
    const r = await sh(single.script, dir);
    // The genuine content checks out and runs; the extra entries never reach the disk.
    expect(r.out).toContain('Verified OK');
    expect(r.out).toContain('error[PROMPT_NO_TTY]');
    expect(await treeFiles(dir)).toEqual(await listedTree(dir));
    await expect(fs.access(marker)).rejects.toThrow();
  });

  it('read only the parts parts.json lists, in its order: a stray FILE.part000 is never read', async () => {
    const marker = path.join(work, `${MARK}-part000`);
    // A tar stream with no end-of-archive blocks, so that read first it would run on into the real parts.
    const t = await tmpdir('ferry-part000-');
    await write(path.join(t, 'x', 'ferry/node_modules/supports-color/index.js'), plantedModule(marker));
    await execFileP('tar', ['-cf', path.join(t, 'p.tar'), '-b', '1', '-C', path.join(t, 'x'), 'ferry/node_modules/supports-color/index.js']);
    const p = await fs.readFile(path.join(t, 'p.tar'));
    await fs.rm(t, { recursive: true, force: true });
    const files: Record<string, Buffer> = { [`${split.base}.part000`]: p.subarray(0, p.length - 1024) };
    for (const f of await fs.readdir(split.dir)) files[f] = await fs.readFile(path.join(split.dir, f));
    const dir = await siteWith('part000', files);
    const r = await sh(split.script, dir);
    expect(r.out).toContain('Verified OK');
    expect(r.out).toContain('error[PROMPT_NO_TTY]');
    expect(await treeFiles(dir)).toEqual(await listedTree(dir));
    await expect(fs.access(marker)).rejects.toThrow();
  });

  it('refuse, in install.sh and in the bundled ferry, a file left under ferry/ or runtime/ from an earlier extraction', async () => {
    const dir = await siteWith('leftover', { 'boot-1.0.0.ferry.tar': await fs.readFile(single.file) });
    expect((await sh(single.script, dir)).out).toContain('error[PROMPT_NO_TTY]');
    const marker = path.join(work, `${MARK}-leftover`);
    for (const left of ['ferry/node_modules/supports-color/index.js', 'runtime/linux-amd64/node_modules/cpu-features/index.js', 'ferry/chunks/chunk-OLDFERRY.mjs']) {
      await write(path.join(dir, left), plantedModule(marker));
      // The printed steps again, as an operator re-runs them: install.sh stops before Node starts.
      const r = await sh(single.script, dir);
      expect(r.code, r.out).toBe(5);
      expect(r.out).toContain(left);
      expect(r.out).toContain('error[FERRY_TREE_UNLISTED]');
      expect(r.out).not.toContain('PROMPT_NO_TTY');
      // The bundled ferry, started without install.sh, refuses before any of its code loads.
      const g = await sh('runtime/linux-amd64/node ferry/ferry.mjs --version', dir);
      expect(g.code).toBe(5);
      expect(g.out).toContain('error[FERRY_TREE_UNLISTED]');
      await expect(fs.access(marker)).rejects.toThrow();
      await fs.rm(path.join(dir, left));
    }
    // A link is not a listed file either, whatever its name.
    await fs.rm(path.join(dir, 'ferry/ferry.files'));
    await fs.symlink('/etc/hostname', path.join(dir, 'ferry/ferry.files'));
    const l = await sh('sh install.sh boot-1.0.0.ferry.tar --trust ferry.pub', dir);
    expect(l.code).toBe(5);
    expect(l.out).toContain('error[FERRY_TREE_UNLISTED]');
  });

  it('keep no setuid bit or owner from the unsigned tar headers', async () => {
    const bad = await tampered(await fs.readFile(single.file), async (root) => {
      await fs.chmod(path.join(root, 'runtime/linux-amd64/node'), 0o4755);
      await fs.chown(path.join(root, 'runtime/linux-amd64/node'), 0, 0);
    });
    const dir = await siteWith('setuid', { 'boot-1.0.0.ferry.tar': bad });
    const r = await sh(single.script, dir);
    expect(r.out).toContain('error[PROMPT_NO_TTY]');
    expect((await fs.stat(path.join(dir, 'runtime/linux-amd64/node'))).mode & 0o7777).toBe(0o755);
  });

  it('install.sh re-checks its siblings and refuses one changed after the check (a guard against accidents)', async () => {
    const dir = await siteWith('changed-later', { 'boot-1.0.0.ferry.tar': await fs.readFile(single.file) });
    expect((await sh(single.script, dir)).out).toContain('error[PROMPT_NO_TTY]');
    const marker = path.join(work, `${MARK}-after-check`);
    await fs.writeFile(path.join(dir, 'ferry/ferry.mjs'), markerJs(marker));
    const r = await sh('sh install.sh boot-1.0.0.ferry.tar --trust ferry.pub', dir);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/ferry\/ferry\.mjs: FAILED/);
    expect(r.out).toContain('do not match checksums.txt');
    await expect(fs.access(marker)).rejects.toThrow();
    // A lost checksums.txt is refused too, not skipped.
    await fs.rm(path.join(dir, 'checksums.txt'));
    await fs.writeFile(path.join(dir, 'ferry/ferry.mjs'), markerJs(marker));
    expect((await sh('sh install.sh boot-1.0.0.ferry.tar --trust ferry.pub', dir)).code).not.toBe(0);
    await expect(fs.access(marker)).rejects.toThrow();
  });
});
