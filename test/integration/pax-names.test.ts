import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildBundle } from '../../src/bundle/build.js';
import { RegistryClient } from '../../src/oci/client.js';
import { loadPrivateKey } from '../../src/sign/keys.js';
import { sha256Hex } from '../../src/util/digest.js';
import { ferry, ROOT } from '../helpers/cli.js';
import { miniProject, type MiniProject } from '../helpers/mini-bundle.js';
import { execFileP, tmpdir } from '../helpers/peers.js';

/*
 * Issue 10 item 6: PAX record lengths count bytes. A bundle whose entry names are not ASCII (the
 * bundled ferry's chunks here: names a build takes as they are) must verify and unpack, whatever
 * the mix of name length and byte length.
 */
let work: string;
let p: MiniProject;

const NAMES = [
  'ü.mjs', // short: PAX only because it is not ASCII
  `${'é'.repeat(60)}.mjs`, // 64 characters, 124 bytes: over ustar's 100 bytes only in bytes
  `${'日本'.repeat(30)}.mjs`, // 3-byte characters, 184 bytes
  `emoji-😀-${'x'.repeat(120)}.mjs`, // a 4-byte character in a name that is long anyway
  `${'ß'.repeat(49)}.mjs`, // 102 bytes, just over ustar's name field
];

beforeAll(async () => {
  work = await tmpdir('ferry-pax-');
  p = await miniProject(path.join(work, 'project'));
  // The bundled ferry, plus chunks with non-ASCII names.
  const ferryDir = path.join(work, 'ferry');
  await fs.cp(path.join(ROOT, 'dist', 'ferry'), ferryDir, { recursive: true });
  await fs.mkdir(path.join(ferryDir, 'chunks'), { recursive: true });
  for (const n of NAMES) {
    const body = `export const name = ${JSON.stringify(n)};\n`;
    await fs.writeFile(path.join(ferryDir, 'chunks', n), body);
    // The build carries exactly the files the bundled ferry's own list names.
    await fs.appendFile(path.join(ferryDir, 'ferry.files'), `${sha256Hex(Buffer.from(body))}  chunks/${n}\n`);
  }
  process.env.FERRY_CACHE_DIR = p.cache;
  await buildBundle({ specFile: p.specFile, lockFile: path.join(p.dir, 'images.lock'), key: await loadPrivateKey(p.key), out: path.join(work, 'mini.ferry.tar'), client: new RegistryClient(), ferryDir });
  await buildBundle({ specFile: p.specFile, lockFile: path.join(p.dir, 'images.lock'), key: await loadPrivateKey(p.key), out: path.join(work, 'split', 'mini.ferry.tar'), partSize: 100_000, client: new RegistryClient(), ferryDir });
}, 120_000);

afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('entry names that are not ASCII', () => {
  it('verify accepts a bundle built with them, whole or in parts', async () => {
    for (const input of [path.join(work, 'mini.ferry.tar'), path.join(work, 'split', 'mini.ferry.tar.parts.json')]) {
      const v = await ferry(['bundle', 'verify', input, '--trust', p.pub]);
      expect(v.stderr).not.toMatch(/error/);
      expect(v.code).toBe(0);
    }
  });

  it('unpack writes each file under its own name, with its own bytes, as GNU tar reads them too', async () => {
    const to = path.join(work, 'unpacked');
    const u = await ferry(['bundle', 'unpack', path.join(work, 'mini.ferry.tar'), '--to', to, '--trust', p.pub]);
    expect(u.code, u.stderr).toBe(0);
    for (const n of NAMES) expect(await fs.readFile(path.join(to, 'ferry', 'chunks', n), 'utf8')).toContain(JSON.stringify(n));
    const { stdout } = await execFileP('tar', ['-tf', path.join(work, 'mini.ferry.tar')], { maxBuffer: 16 << 20 });
    for (const n of NAMES) expect(stdout.split('\n')).toContain(`ferry/chunks/${n}`);
  });
});
