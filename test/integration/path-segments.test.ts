import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry } from '../helpers/cli.js';
import { listTree } from '../helpers/mini-bundle.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * Issue 10 item 6: every name and version that becomes a path segment (files/<name>/<version>/
 * linux-<arch>/<file>, a chart's name in the file cache) is checked when the spec is validated,
 * with file:line:col, so no build writes a bundle that ferry refuses or a file outside its cache.
 */
let work: string;

beforeAll(async () => {
  work = await tmpdir('ferry-segments-');
  await fs.mkdir(path.join(work, 'vendor'), { recursive: true });
  await fs.writeFile(path.join(work, 'vendor', 'tool'), 'x');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const SHA = 'a'.repeat(64);
/** A spec whose binary (line 8) or chart (line 10) carries the value under test. */
const spec = (o: { version?: string; url?: string; extract?: boolean; chart?: string }) => `apiVersion: ferry.dev/v1alpha1
kind: BundleSpec
metadata: {name: seg, version: 0.1.0}
spec:
  platforms: [linux/amd64, linux/arm64]
  images: []
  binaries:
    - {name: tool, version: ${JSON.stringify(o.version ?? 'v1.0.0')}, url: ${JSON.stringify(o.url ?? 'vendor/tool')}, sha256: {linux/amd64: ${SHA}, linux/arm64: ${SHA}}${o.extract ? ', extract: true' : ''}}
  charts:
    - {name: ${JSON.stringify(o.chart ?? 'demo')}, path: charts/demo}
`;

async function validate(text: string, name: string) {
  const file = path.join(work, 'bundle-spec', `${name}.yaml`);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, text);
  return { file, r: await ferry(['spec', 'validate', file]) };
}

const badVersions: [string, string][] = [
  ['climbs out with ..', '../../../x'],
  ['is ..', '..'],
  ['is .', '.'],
  ['holds a slash', 'v1/../../etc'],
  ['holds a backslash', 'v1\\..\\x'],
  ['is empty', ''],
  ['starts with a dot', '.hidden'],
  ['holds a NUL', 'v1\u0000'],
  ['holds a newline (a second checksums.txt line)', 'v1\nffff  x'],
  ['holds a space', 'v1 beta'],
  ['holds a URL character the site would misread', 'v1?x=1'],
  ['is not ASCII', 'v1-ß'],
  ['is longer than a file name may be', `v${'1'.repeat(200)}`],
];

describe('names and versions that become path segments are checked at spec validation', () => {
  it('accepts the versions real projects use', async () => {
    for (const v of ['v1.37.2', '1.7.22', '2.0.0-rc.1', '1.2.3+build.5', '1.0~beta', '2024-01-01', 'v1.3.7_1']) {
      const { r } = await validate(spec({ version: v }), 'ok');
      expect(r.code, `${v}: ${r.stderr}`).toBe(0);
    }
  });

  it.each(badVersions)('refuses a binary version that %s, naming file:line:col', async (_why, version) => {
    const { file, r } = await validate(spec({ version }), 'bad-version');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('error[SPEC_INVALID]');
    expect(r.stderr).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:8:\\d+: spec\\.binaries\\[0\\]\\.version must match pattern`));
    expect(r.stderr).toContain('It names a directory in the bundle');
  });

  it.each([
    ['climbs out of the file cache', '../../../../tmp/ferry-chart-escape'],
    ['holds a slash', 'charts/demo'],
    ['is ..', '..'],
    ['is not ASCII', 'démo'],
  ])('refuses a chart name that %s', async (_why, chart) => {
    const { file, r } = await validate(spec({ chart }), 'bad-chart');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${file}:10:`);
    expect(r.stderr).toMatch(/spec\.charts\[0\]\.name must match pattern/);
  });

  it.each([
    ['has no file name at all', 'https://dl.example/'],
    ['climbs to the root', 'https://dl.example/{version}/..'],
    ['has a file name the site would misread', 'https://dl.example/tools/tool%3F{arch}.tgz'],
    ['has a file name that is not ASCII', 'vendor/tööl-{arch}.tgz'],
  ])('refuses an archive to extract whose URL %s', async (_why, url) => {
    const { file, r } = await validate(spec({ url, extract: true }), 'bad-url');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:8:\\d+: spec\\.binaries\\[0\\]\\.url gives the file name "[^"]*" for linux/amd64`));
  });

  it('makes the build refuse the same spec before it fetches or writes anything', async () => {
    const { file } = await validate(spec({ version: '../../../x' }), 'build-me');
    const keys = path.join(work, 'keys');
    expect((await ferry(['key', 'generate', '--out', keys])).code).toBe(0);
    const cache = path.join(work, 'cache');
    const out = path.join(work, 'out', 'seg.ferry.tar');
    const b = await ferry(['bundle', 'build', file, '--key', path.join(keys, 'ferry.key'), '--out', out], { env: { FERRY_CACHE_DIR: cache } });
    expect(b.code).toBe(2);
    expect(b.stderr).toContain(`${file}:8:`);
    expect(await listTree(path.join(work, 'out'))).toEqual([]);
    expect(await listTree(cache)).toEqual([]);
  });
});
