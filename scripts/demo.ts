/**
 * The embedded demo: build fixture images, serve them from a real registry on loopback, then run
 * ferry's main connected-side job on them (push, lock, pull into a store) with no internet.
 *   npm run demo [-- --keep]    (--keep leaves ./demo-out and its store in place)
 */
import { execFileSync, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildBusyboxImage, buildFixtureSet } from '../fixtures/images.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'demo-out');
const keep = process.argv.includes('--keep');

function step(msg: string) {
  process.stdout.write(`\n==> ${msg}\n`);
}
function ferry(args: string[], env: NodeJS.ProcessEnv = {}) {
  process.stdout.write(`$ ferry ${args.join(' ')}\n`);
  execFileSync(process.execPath, [path.join(root, 'bin/ferry'), ...args], { stdio: 'inherit', env: { ...process.env, ...env } });
}
function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

if (!have('docker-registry')) {
  console.error('error[DEMO_PEER_MISSING]: docker-registry is not installed\n  hint: run ./scripts/setup.sh first (it installs the Debian packages the demo and tests use).');
  process.exit(2);
}

await fs.rm(out, { recursive: true, force: true });
await fs.mkdir(out, { recursive: true });
const port = await new Promise<number>((r) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const p = (s.address() as net.AddressInfo).port;
    s.close(() => r(p));
  });
});
const host = `127.0.0.1:${port}`;

step('building fixture images (multi-arch OCI index, Docker manifest list, busybox) in code');
const fx = await buildFixtureSet(path.join(out, 'fixtures'), 4);
await buildBusyboxImage(fx.store, 'tools/busybox:1');

step(`starting the CNCF distribution registry on ${host}`);
await fs.writeFile(path.join(out, 'registry.yml'), `version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: ${out}/registry}}\nhttp: {addr: ${host}}\n`);
const reg = spawn('docker-registry', ['serve', path.join(out, 'registry.yml')], { stdio: 'ignore' });
try {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://${host}/v2/`)).ok) break;
    } catch {
      /* not up yet */
    }
    if (i > 100) throw new Error('the registry did not start');
    await new Promise((r) => setTimeout(r, 50));
  }

  step('loading the fixtures into the registry with ferry images push');
  ferry(['images', 'push', '--store', fx.store.dir, '--to', `${host}/demo`]);

  step('writing a bundle spec for them');
  const spec = path.join(out, 'bundle-spec', 'demo.yaml');
  await fs.mkdir(path.dirname(spec), { recursive: true });
  await fs.writeFile(
    spec,
    `apiVersion: ferry.dev/v1alpha1
kind: BundleSpec
metadata: {name: demo, version: 0.1.0}
spec:
  platforms: [linux/amd64, linux/arm64]
  images:
    - ${host}/demo/multi:v1
    - ${host}/demo/dockerlist:v1
    - {ref: ${host}/demo/single:v1, platforms: [linux/amd64]}
    - {ref: ${host}/demo/tools/busybox:1, platforms: [linux/amd64]}
`,
  );
  process.stdout.write(await fs.readFile(spec, 'utf8'));

  const env = { FERRY_CACHE_DIR: path.join(out, 'cache') };
  step('pinning every tag to a digest');
  ferry(['lock', spec, '--lock', path.join(out, 'images.lock')], env);
  step('pulling every image into a store (an OCI image layout)');
  ferry(['images', 'pull', spec, '--lock', path.join(out, 'images.lock'), '--out', path.join(out, 'store')], env);
  step('pulling again: everything is already there');
  ferry(['images', 'pull', spec, '--lock', path.join(out, 'images.lock'), '--out', path.join(out, 'store')], env);
  if (have('skopeo')) {
    step('skopeo reads the store');
    const ref = `oci:${out}/store:${host}/demo/multi:v1`;
    process.stdout.write(`$ skopeo inspect ${ref}\n`);
    const info = JSON.parse(execFileSync('skopeo', ['inspect', ref], { encoding: 'utf8' })) as { Digest: string; Architecture: string };
    process.stdout.write(`digest ${info.Digest}, architecture ${info.Architecture}\n`);
  }
  step(`done: the store is in ${path.relative(process.cwd(), path.join(out, 'store'))}`);
} finally {
  reg.kill('SIGTERM');
  if (!keep) {
    await new Promise((r) => reg.once('exit', r));
    await fs.rm(path.join(out, 'registry'), { recursive: true, force: true });
    await fs.rm(path.join(out, 'fixtures'), { recursive: true, force: true });
  }
}
