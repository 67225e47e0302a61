import { generateKeyPairSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readBundleManifest } from '../../src/bundle/inspect.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { verifyBundle } from '../../src/bundle/verify.js';
import { honestContent, hostileArchive, signedTable, tarOf, writeHostile, type Attack } from '../../fixtures/hostile.js';
import { tmpdir } from '../helpers/peers.js';

const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

const cases: [Attack, string][] = [
  ['absolute-path', 'BUNDLE_PATH_ABSOLUTE'],
  ['dotdot-path', 'BUNDLE_PATH_TRAVERSAL'],
  ['symlink-escape', 'BUNDLE_LINK_ESCAPE'],
  ['symlink-inside', 'BUNDLE_LINK_UNSUPPORTED'],
  ['hardlink-escape', 'BUNDLE_LINK_ESCAPE'],
  ['device-node', 'BUNDLE_SPECIAL_FILE'],
  ['unlisted-entry', 'BUNDLE_ENTRY_UNLISTED'],
  ['duplicate-entry', 'BUNDLE_ENTRY_DUPLICATE'],
  ['truncated-mid-entry', 'BUNDLE_TRUNCATED'],
  ['truncated-at-boundary', 'BUNDLE_TRUNCATED'],
  ['wrong-first-entry', 'BUNDLE_FORMAT'],
  ['tampered-content', 'BUNDLE_CHECKSUM_MISMATCH'],
  ['tampered-checksums', 'BUNDLE_SIGNATURE_INVALID'],
  ['signed-by-other-key', 'BUNDLE_SIGNATURE_INVALID'],
];

describe('hostile bundles are refused, each with its own code, and nothing lands on the host', () => {
  it('accepts the honest archive the attacks are made from', async () => {
    const dir = await tmpdir();
    const file = path.join(dir, 'honest.tar');
    const { tarOf, signedTable, honestContent } = await import('../../fixtures/hostile.js');
    await fs.writeFile(file, tarOf([...signedTable(key.privateKey, honestContent), ...honestContent.map((c) => ({ name: c.path, data: c.data }))]));
    const r = await unpackBundle(file, path.join(dir, 'out'), { trust: key.publicKey });
    expect(r.entries).toBe(5);
    expect(await fs.readFile(path.join(dir, 'out', 'install.sh'), 'utf8')).toContain('echo hi');
  });

  it.each(cases)('%s → %s', async (attack, code) => {
    const dir = await tmpdir();
    const file = await writeHostile(path.join(dir, `${attack}.tar`), attack, key.privateKey, other.privateKey);
    await expect(verifyBundle(file, { trust: key.publicKey })).rejects.toMatchObject({ code, hint: expect.any(String) });
    const dest = path.join(dir, 'site', 'bundle');
    await expect(unpackBundle(file, dest, { trust: key.publicKey })).rejects.toMatchObject({ code });
    // The destination never appears, no staging is left, and nothing escaped.
    expect(await fs.readdir(path.join(dir, 'site'))).toEqual([]);
    expect(await fs.readdir(dir)).toEqual(['site', `${attack}.tar`].sort());
    for (const p of ['/tmp/ferry-hostile-absolute', path.resolve(dir, '..', 'ferry-hostile-dotdot'), path.join(dir, 'site', '..', '..', 'ferry-hostile-dotdot')]) {
      await expect(fs.access(p)).rejects.toThrow();
    }
  });

  it('refuses an archive that is not a tar at all', async () => {
    const dir = await tmpdir();
    const file = path.join(dir, 'junk.tar');
    await fs.writeFile(file, Buffer.from('this is not a tarball, just words '.repeat(100)));
    await expect(verifyBundle(file, { trust: key.publicKey })).rejects.toMatchObject({ code: expect.stringMatching(/^BUNDLE_(TRUNCATED|FORMAT)$/) });
  });

  it('asks for confirmation of the signer without --trust, and refuses when it is declined', async () => {
    const file = path.join(await tmpdir(), 'b.tar');
    const { tarOf, signedTable, honestContent } = await import('../../fixtures/hostile.js');
    await fs.writeFile(file, tarOf([...signedTable(key.privateKey, honestContent), ...honestContent.map((c) => ({ name: c.path, data: c.data }))]));
    const shown: string[] = [];
    await expect(verifyBundle(file, { confirm: async (fp) => (shown.push(fp), false) })).rejects.toMatchObject({ code: 'BUNDLE_UNTRUSTED' });
    expect(shown).toHaveLength(1);
    const ok = await verifyBundle(file, { confirm: async () => true });
    expect(ok.fingerprint).toBe(shown[0]);
  });

  it('builds every attack archive differently from the honest one', () => {
    const seen = new Set(cases.map(([a]) => hostileArchive(a, key.privateKey, other.privateKey).toString('base64')));
    expect(seen.size).toBe(cases.length);
  });
});

describe('unpack preflight', () => {
  it('refuses a bundle larger than the free space, before writing anything', async () => {
    const dir = await tmpdir();
    const { tarOf, signedTable, honestContent } = await import('../../fixtures/hostile.js');
    const table = signedTable(key.privateKey, honestContent);
    // bundle.json claims a petabyte of content; the preflight reads it before anything else.
    const m = JSON.parse(table[0]!.data!.toString()) as { contentSize: number };
    m.contentSize = 2 ** 50;
    table[0] = { ...table[0]!, data: Buffer.from(JSON.stringify(m)) };
    const file = path.join(dir, 'huge.tar');
    await fs.writeFile(file, tarOf([...table, ...honestContent.map((c) => ({ name: c.path, data: c.data }))]));
    await expect(unpackBundle(file, path.join(dir, 'site', 'bundle'), { trust: key.publicKey })).rejects.toMatchObject({
      code: 'STORE_IO',
      message: expect.stringMatching(/not enough space in .*: the bundle needs 1024\.0 TiB/),
      hint: expect.stringContaining('--to'),
    });
    expect(await fs.readdir(path.join(dir, 'site'))).toEqual([]);
  });
});

describe('a parts manifest is read one way, by verify, inspect and unpack alike', () => {
  // Each name, were it followed, would lead to an honest bundle: only the check stops a reader.
  it.each([
    ['../x', 'x'],
    ['/proc/self/fd/0', 'split/proc/self/fd/0'],
  ])('a part named %s is refused before any part is opened', async (name, lure) => {
    const dir = await tmpdir();
    const honest = tarOf([...signedTable(key.privateKey, honestContent), ...honestContent.map((c) => ({ name: c.path, data: c.data }))]);
    await fs.mkdir(path.dirname(path.join(dir, lure)), { recursive: true });
    await fs.writeFile(path.join(dir, lure), honest);
    const file = path.join(dir, 'split', 'b.ferry.tar.parts.json');
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, JSON.stringify({ formatVersion: 1, bundle: 'hostile-0.0.1', checksums: '0'.repeat(64), size: honest.length, parts: [{ name, size: honest.length, sha256: 'a'.repeat(64) }] }));
    const refused = { code: 'BUNDLE_FORMAT', message: `${file} is not a ferry parts manifest`, hint: expect.any(String) };
    await expect(verifyBundle(file, { trust: key.publicKey })).rejects.toMatchObject(refused);
    await expect(readBundleManifest(file)).rejects.toMatchObject(refused);
    await expect(unpackBundle(file, path.join(dir, 'site', 'bundle'), { trust: key.publicKey })).rejects.toMatchObject(refused);
    expect(await fs.readdir(path.join(dir, 'site'))).toEqual([]);
  });
});
