import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { honestContent, signedTable, tarOf } from '../../fixtures/hostile.js';
import { partsSigningBytes, type PartsManifest } from '../../src/bundle/format.js';
import { elfProblem, fetchRuntimes } from '../../src/bundle/runtime.js';
import { verifyBundle } from '../../src/bundle/verify.js';
import { Host } from '../../src/install/host.js';
import { applySysctls, loadModules } from '../../src/install/kernel.js';
import { fingerprint, signBytes } from '../../src/sign/keys.js';
import { ferry } from '../helpers/cli.js';
import { elfStandin } from '../../fixtures/elf.js';
import { tmpdir } from '../helpers/peers.js';

/** The mistakes operators make (issue 12 item 5): each with its code, its exit and a hint. */

let work: string;
let keys: string;
let signerFp: string;
const signer = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

/** A ferry bundle signed by `signer`, with `extra` entries after the honest content. */
async function bundle(name: string, extra: { path: string; data: Buffer; mode?: number }[] = []): Promise<string> {
  const content: { path: string; data: Buffer; mode?: number }[] = [...honestContent, ...extra];
  const file = path.join(work, name);
  await fs.writeFile(file, tarOf([...signedTable(signer.privateKey, content), ...content.map((c) => ({ name: c.path, data: c.data, ...(c.mode ? { mode: c.mode } : {}) }))]));
  return file;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A parts manifest for `n` parts named `<base>.partNNN`, signed by `signer`; only the parts in `present` are written. */
async function split(base: string, n: number, present: number[]): Promise<string> {
  const parts = Array.from({ length: n }, (_, i) => {
    const data = Buffer.from(`part ${i + 1}\n`);
    return { name: `${base}.part${String(i + 1).padStart(3, '0')}`, size: data.length, sha256: sha(data), data };
  });
  for (const i of present) await fs.writeFile(path.join(work, parts[i - 1]!.name), parts[i - 1]!.data);
  const pub = createPublicKey(signer.privateKey);
  const m: PartsManifest = {
    formatVersion: 1,
    bundle: base,
    checksums: '0'.repeat(64),
    size: parts.reduce((s, p) => s + p.size, 0),
    parts: parts.map(({ data: _d, ...p }) => p),
    signer: { fingerprint: fingerprint(pub), publicKey: pub.export({ type: 'spki', format: 'pem' }) as string },
  };
  m.signature = signBytes(signer.privateKey, partsSigningBytes(m));
  const file = path.join(work, `${base}.parts.json`);
  await fs.writeFile(file, JSON.stringify(m));
  return file;
}

beforeAll(async () => {
  work = await tmpdir('ferry-mistakes-');
  keys = path.join(work, 'keys');
  expect((await ferry(['key', 'generate', '--out', keys])).code).toBe(0);
  signerFp = fingerprint(createPublicKey(signer.privateKey));
}, 60_000);
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('bundle paths', () => {
  it('a bundle path that does not exist is BUNDLE_NOT_FOUND (exit 2), for verify, inspect and unpack, file or parts manifest', async () => {
    for (const args of [
      ['bundle', 'verify', path.join(work, 'nope.ferry.tar'), '--trust', `${keys}/ferry.pub`],
      ['bundle', 'verify', path.join(work, 'nope.ferry.tar.parts.json'), '--trust', `${keys}/ferry.pub`],
      ['bundle', 'inspect', path.join(work, 'nope.ferry.tar')],
      ['bundle', 'inspect', path.join(work, 'nope.ferry.tar.parts.json')],
      ['bundle', 'unpack', path.join(work, 'nope.ferry.tar'), '--trust', `${keys}/ferry.pub`, '--to', path.join(work, 'unpacked')],
    ]) {
      const r = await ferry(args);
      expect(r.stderr, args.join(' ')).toMatch(/^error\[BUNDLE_NOT_FOUND\]: bundle \S+ does not exist$/m);
      expect(r.stderr).toMatch(/^ {2}hint: Check the path/m);
      expect(r.code).toBe(2);
    }
  });

  it('passing part001 instead of the parts manifest says which file to pass (BUNDLE_PART_GIVEN, exit 2)', async () => {
    const manifest = await split('site.ferry.tar', 3, [1, 2, 3]);
    for (const cmd of [['bundle', 'verify'], ['bundle', 'inspect']]) {
      const r = await ferry([...cmd, path.join(work, 'site.ferry.tar.part001'), ...(cmd[1] === 'verify' ? ['--trust', `${keys}/ferry.pub`] : [])]);
      expect(r.stderr).toMatch(/^error\[BUNDLE_PART_GIVEN\]: \S+site\.ferry\.tar\.part001 is one part of a split bundle/m);
      expect(r.stderr).toContain(`hint: Pass ${manifest}: it lists every part and is signed.`);
      expect(r.code).toBe(2);
    }
  });

  it('a missing part lists only the missing names', async () => {
    const manifest = await split('many.ferry.tar', 40, Array.from({ length: 40 }, (_, i) => i + 1).filter((i) => i !== 7 && i !== 31));
    const r = await ferry(['bundle', 'verify', manifest, '--trust', `${keys}/ferry.pub`]);
    expect(r.stderr).toMatch(/^error\[BUNDLE_PART_MISSING\]: 2 of 40 parts of many\.ferry\.tar are missing beside \S+: many\.ferry\.tar\.part007, many\.ferry\.tar\.part031$/m);
    expect(r.stderr).not.toContain('part001');
    expect(r.stderr).toMatch(/hint: Copy those parts into /);
    expect(r.code).toBe(5);
  });
});

describe('--trust', () => {
  it('refuses a private key with KEY_NOT_PUBLIC (exit 2) and says to keep it off the site', async () => {
    const b = await bundle('priv.ferry.tar');
    const r = await ferry(['bundle', 'verify', b, '--trust', `${keys}/ferry.key`]);
    expect(r.stderr).toMatch(/^error\[KEY_NOT_PUBLIC\]: \S+ferry\.key is a private key; --trust takes the public key \(ferry\.pub\)$/m);
    expect(r.stderr).toMatch(/hint: Pass ferry\.pub.*Keep ferry\.key off the site/);
    expect(r.code).toBe(2);
  });

  it('a wrong key shows the signer fingerprint the bundle claims (BUNDLE_SIGNATURE_INVALID, exit 5), for a file and for parts', async () => {
    const b = await bundle('wrong.ferry.tar');
    const parts = await split('wrongparts.ferry.tar', 2, [1, 2]);
    const trusted = (await ferry(['key', 'generate', '--out', path.join(work, 'third')])).stdout.match(/sha256:[a-f0-9]{64}/)?.[0];
    for (const file of [b, parts]) {
      const r = await ferry(['bundle', 'verify', file, '--trust', path.join(work, 'third', 'ferry.pub')]);
      expect(r.stderr).toMatch(/^error\[BUNDLE_SIGNATURE_INVALID\]: the signature of .* does not verify with the trusted key sha256:[a-f0-9]{64}; the bundle says it was signed by sha256:[a-f0-9]{64}$/m);
      expect(r.stderr).toContain(`the bundle says it was signed by ${signerFp}`);
      if (trusted) expect(r.stderr).toContain(`trusted key ${trusted}`);
      expect(r.stderr).toMatch(/hint: Compare sha256:\S+ with the fingerprint the bundle's maker gave you/);
      expect(r.code).toBe(5);
    }
  });
});

describe('stores and unpacked bundles', () => {
  it('images push --store /typo is STORE_NOT_FOUND (exit 2) and creates nothing', async () => {
    const typo = path.join(work, 'stroe');
    const r = await ferry(['images', 'push', '--store', typo, '--to', '127.0.0.1:9']);
    expect(r.stderr).toMatch(/^error\[STORE_NOT_FOUND\]: store \S+stroe does not exist$/m);
    expect(r.stderr).toMatch(/hint: Pass the directory `ferry images pull --out DIR` filled/);
    expect(r.code).toBe(2);
    await expect(fs.stat(typo)).rejects.toMatchObject({ code: 'ENOENT' });
    // A directory that is not a layout is refused too, and left as it was.
    const plain = path.join(work, 'plain');
    await fs.mkdir(plain);
    const p = await ferry(['images', 'push', '--store', plain, '--to', '127.0.0.1:9']);
    expect(p.stderr).toMatch(/^error\[STORE_NOT_FOUND\]: \S+plain is not an OCI image layout \(it has no index\.json\)$/m);
    expect(p.code).toBe(2);
    expect(await fs.readdir(plain)).toEqual([]);
  });

  it('serve --bundle x.tar points at the directory ferry bundle unpack writes (SERVE_BUNDLE_ARCHIVE, exit 2)', async () => {
    const b = await bundle('serve.ferry.tar');
    const r = await ferry(['serve', '--bundle', b, '--listen', '127.0.0.1:0']);
    expect(r.stderr).toMatch(/^error\[SERVE_BUNDLE_ARCHIVE\]: --bundle \S+serve\.ferry\.tar is a file; ferry serve reads an unpacked bundle directory$/m);
    expect(r.stderr).toContain(`hint: Point --bundle at the directory \`ferry bundle unpack ${b} --trust ferry.pub --to DIR\` wrote`);
    expect(r.code).toBe(2);
  });
});

describe('host tools', () => {
  it('a missing modprobe or sysctl is HOST_COMMAND_MISSING (exit io) naming the package, never "the plan installs it"', async () => {
    const root = await tmpdir();
    const empty = path.join(root, '.empty-bin');
    await fs.mkdir(empty);
    const host = new Host(root, { ...process.env, PATH: empty });
    const err = await loadModules(host, () => {}).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'HOST_COMMAND_MISSING', exit: 'io', message: 'modprobe is not installed on this host (not found on PATH)', hint: expect.stringContaining('package kmod') });
    expect((err as Error & { hint: string }).hint).not.toMatch(/plan installs/);
    const s = await applySysctls(host, () => {}).then(() => undefined, (e: unknown) => e);
    expect(s).toMatchObject({ code: 'HOST_COMMAND_MISSING', exit: 'io', message: 'sysctl is not installed on this host (not found on PATH)', hint: expect.stringContaining('package procps') });
    await fs.rm(root, { recursive: true, force: true });
  });
});

describe('the runtime is an ELF binary for its labelled architecture', () => {
  it('reads ELF magic and e_machine', () => {
    expect(elfProblem(elfStandin('amd64'), 'linux/amd64')).toBeUndefined();
    expect(elfProblem(elfStandin('arm64'), 'linux/arm64')).toBeUndefined();
    expect(elfProblem(elfStandin('amd64'), 'linux/arm64')).toBe('it is an ELF binary for amd64, not arm64');
    expect(elfProblem(Buffer.from('#!/bin/sh\necho node\n'), 'linux/amd64')).toBe('it is not an ELF binary');
    expect(elfProblem(Buffer.alloc(0), 'linux/amd64')).toBe('it is not an ELF binary');
  });

  it('refuses at build a runtime for another arch, or not a binary (RUNTIME_ARCH_MISMATCH, exit integrity)', async () => {
    const dir = await tmpdir();
    await fs.writeFile(path.join(dir, 'node'), elfStandin('amd64', 'x'));
    await fs.writeFile(path.join(dir, 'script'), '#!/bin/sh\necho node\n');
    const wrong = await fetchRuntimes(['linux/arm64'], { 'linux/arm64': path.join(dir, 'node') }, path.join(dir, 'cache')).then(() => undefined, (e: unknown) => e);
    expect(wrong).toMatchObject({ code: 'RUNTIME_ARCH_MISMATCH', exit: 'integrity', message: expect.stringMatching(/^the Node\.js runtime for linux\/arm64 \(\S+node\) cannot run there: it is an ELF binary for amd64, not arm64$/), hint: expect.stringContaining('spec.runtime.node.linux/arm64') });
    const script = await fetchRuntimes(['linux/amd64'], { 'linux/amd64': path.join(dir, 'script') }, path.join(dir, 'cache')).then(() => undefined, (e: unknown) => e);
    expect(script).toMatchObject({ code: 'RUNTIME_ARCH_MISMATCH', message: expect.stringContaining('it is not an ELF binary') });
    // The real node of this machine is fine for its own arch.
    const arch = process.arch === 'arm64' ? 'arm64' : 'amd64';
    expect(await fetchRuntimes([`linux/${arch}`], { [`linux/${arch}`]: process.execPath }, path.join(dir, 'cache'))).toHaveLength(1);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('refuses at verify (so at unpack and install) a signed bundle whose runtime is for another arch', async () => {
    const ok = await bundle('rt-ok.ferry.tar', [{ path: 'runtime/linux-arm64/node', data: elfStandin('arm64', 'node'), mode: 0o755 }]);
    await expect(verifyBundle(ok, { trust: createPublicKey(signer.privateKey) })).resolves.toMatchObject({ entries: 6 });
    const bad = await bundle('rt-bad.ferry.tar', [{ path: 'runtime/linux-arm64/node', data: elfStandin('amd64', 'node'), mode: 0o755 }]);
    await fs.writeFile(path.join(work, 'signer.pub'), createPublicKey(signer.privateKey).export({ type: 'spki', format: 'pem' }) as string);
    const v = await ferry(['bundle', 'verify', bad, '--trust', path.join(work, 'signer.pub')]);
    expect(v.stderr).toMatch(/^error\[RUNTIME_ARCH_MISMATCH\]: entry runtime\/linux-arm64\/node cannot run on its architecture: it is an ELF binary for amd64, not arm64$/m);
    expect(v.stderr).toMatch(/hint: .*rebuild it with the right runtime/);
    expect(v.code).toBe(5);
    const script = await bundle('rt-script.ferry.tar', [{ path: 'runtime/linux-amd64/node', data: Buffer.from('#!/bin/sh\necho node\n'), mode: 0o755 }]);
    await expect(verifyBundle(script, { trust: createPublicKey(signer.privateKey) })).rejects.toMatchObject({ code: 'RUNTIME_ARCH_MISMATCH', message: expect.stringContaining('it is not an ELF binary') });
  });
});
