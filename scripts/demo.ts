/**
 * The embedded demo: build fixture images, binaries and a chart, serve them on loopback (a real
 * registry and a web server), then run ferry's connected-side job on them with no internet: push,
 * lock, pull, and pack a signed bundle, which it then verifies.
 *   npm run demo [-- --keep] [-- --out DIR]
 * --out (default ./demo-out) is where it all goes, so tests run it without touching the user's
 * demo key and bundle; --keep leaves the registry and fixtures there too.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { elfStandin } from '../fixtures/elf.js';
import { buildBusyboxImage, buildFixtureSet } from '../fixtures/images.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outArg = process.argv.indexOf('--out');
const out = outArg > 0 && process.argv[outArg + 1] ? path.resolve(process.argv[outArg + 1]!) : path.join(root, 'demo-out');
const keep = process.argv.includes('--keep');
const hostArch = process.arch === 'arm64' ? 'arm64' : 'amd64';
const otherArch = hostArch === 'arm64' ? 'amd64' : 'arm64';

function step(msg: string) {
  process.stdout.write(`\n==> ${msg}\n`);
}
/** Runs ferry as a child; asynchronously, because this process also serves the downloads. */
async function ferry(args: string[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  process.stdout.write(`$ ferry ${args.join(' ')}\n`);
  const child = spawn(process.execPath, [path.join(root, 'bin/ferry'), ...args], { stdio: 'inherit', env: { ...process.env, ...env } });
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  if (code !== 0) throw new Error(`ferry ${args[0]} failed with exit code ${code}`);
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
const stops: (() => Promise<void>)[] = [];

await fs.rm(path.join(out, 'keys'), { recursive: true, force: true });
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
  await ferry(['images', 'push', '--store', fx.store.dir, '--to', `${host}/demo`]);

  step('serving two node binaries and their checksums from a loopback web server');
  const dl = path.join(out, 'downloads');
  await fs.mkdir(dl, { recursive: true });
  for (const name of ['kubeadm', 'crictl']) {
    const body = Buffer.from(`#!/bin/sh\necho "${name} (demo build)"\n`);
    await fs.writeFile(path.join(dl, name), body);
    await fs.writeFile(path.join(dl, `${name}.sha256`), `${createHash('sha256').update(body).digest('hex')}  ${name}\n`);
  }
  const web = http.createServer((req, res) => {
    const f = path.join(dl, path.basename(req.url ?? ''));
    fs.readFile(f).then((b) => res.end(b), () => res.writeHead(404).end());
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  const webUrl = `http://127.0.0.1:${(web.address() as net.AddressInfo).port}`;
  stops.push(() => new Promise<void>((r) => web.close(() => r())));
  await fs.mkdir(path.join(out, 'charts', 'hello', 'templates'), { recursive: true });
  await fs.writeFile(path.join(out, 'charts', 'hello', 'Chart.yaml'), 'apiVersion: v2\nname: hello\nversion: 0.1.0\n');
  await fs.writeFile(path.join(out, 'charts', 'hello', 'templates', 'cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\ndata: {greeting: hello}\n');

  // No second Node.js offline: the other platform gets an ELF header for its arch, which passes
  // ferry's architecture check but does not run. A real build takes node-linux-<arch> from npm.
  await fs.writeFile(path.join(dl, `node-${otherArch}`), elfStandin(otherArch), { mode: 0o755 });

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
  binaries:
    - {name: kubeadm, version: v1.37.2, url: '${webUrl}/kubeadm', checksumUrl: '${webUrl}/kubeadm.sha256'}
    - {name: crictl, version: v1.37.0, url: '${webUrl}/crictl', checksumUrl: '${webUrl}/crictl.sha256'}
  charts:
    - {name: hello, path: charts/hello}
  runtime:
    # This machine's Node.js for linux/${hostArch}; a header-only stand-in for linux/${otherArch} (it will not run).
    node: {linux/${hostArch}: ${process.execPath}, linux/${otherArch}: ${path.join(dl, `node-${otherArch}`)}}
`,
  );
  process.stdout.write(await fs.readFile(spec, 'utf8'));

  const env = { FERRY_CACHE_DIR: path.join(out, 'cache') };
  step('pinning every tag to a digest');
  await ferry(['lock', spec, '--lock', path.join(out, 'images.lock')], env);
  step('pulling every image into a store (an OCI image layout)');
  await ferry(['images', 'pull', spec, '--lock', path.join(out, 'images.lock'), '--out', path.join(out, 'store')], env);
  step('pulling again: everything is already there');
  await ferry(['images', 'pull', spec, '--lock', path.join(out, 'images.lock'), '--out', path.join(out, 'store')], env);
  step('making a signing key and packing the signed bundle');
  await ferry(['key', 'generate', '--out', path.join(out, 'keys')]);
  const bundle = path.join(out, 'demo-0.1.0.ferry.tar');
  await ferry(['bundle', 'build', spec, '--lock', path.join(out, 'images.lock'), '--key', path.join(out, 'keys', 'ferry.key'), '--out', bundle], env);
  step('checking it the way the site will: signature first, then every entry');
  await ferry(['bundle', 'verify', bundle, '--trust', path.join(out, 'keys', 'ferry.pub')]);
  await ferry(['bundle', 'inspect', bundle]);
  if (have('skopeo')) {
    step('skopeo reads the store');
    const ref = `oci:${out}/store:${host}/demo/multi:v1`;
    process.stdout.write(`$ skopeo inspect ${ref}\n`);
    const info = JSON.parse(execFileSync('skopeo', ['inspect', ref], { encoding: 'utf8' })) as { Digest: string; Architecture: string };
    process.stdout.write(`digest ${info.Digest}, architecture ${info.Architecture}\n`);
  }
  step(`done: the bundle is ${path.relative(process.cwd(), bundle)}, the store ${path.relative(process.cwd(), path.join(out, 'store'))}`);
  // The build printed "On the site" steps: for this bundle they end in a refusal, so say where the site side is.
  process.stdout.write(
    [
      '',
      'This demo bundle is connected-side only: it carries two images and two binaries, and no Kubernetes,',
      'so `ferry install` on it refuses (INSTALL_REFUSED) and the "On the site" steps above are not for it.',
      'To see the site side on this machine, the site in a box installs real Kubernetes from',
      'bundle-spec/kubernetes.yaml on network-namespace hosts (as root):',
      '  npm run site -- up      # the first run builds Kubernetes and its components from source: tens of',
      '                          # minutes on 2 cores, cached after that (about 5 minutes per up)',
      '  npm run site -- down',
      'npm run site -- --help lists the rest; README "The site in a box" tells what it does.',
      '',
    ].join('\n'),
  );
} finally {
  for (const s of stops) await s();
  reg.kill('SIGTERM');
  if (!keep) {
    await new Promise((r) => reg.once('exit', r));
    await fs.rm(path.join(out, 'registry'), { recursive: true, force: true });
    await fs.rm(path.join(out, 'fixtures'), { recursive: true, force: true });
  }
}
