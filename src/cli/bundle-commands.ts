import path from 'node:path';
import { Command } from 'commander';
import { bootstrapScript, bundleFileName, DEFAULT_PART_SIZE, isPartsFile, type BundleManifest } from '../bundle/format.js';
import type { VerifyOptions } from '../bundle/verify.js';
import { Codes, UsageError } from '../errors.js';
import { formatBytes, parseSize } from '../util/size.js';
import { makeOutput, type Output } from './output.js';
import { confirm } from './prompt.js';
import { addRegistryOptions, clientFrom, type RegistryFlags } from './registry-options.js';
import { addPlatformOption, collect, defaultLock, examples, globals } from './shared.js';

async function verifyOptions(o: { trust?: string }, out: Output): Promise<VerifyOptions> {
  const { loadPublicKey } = await import('../sign/keys.js');
  return {
    trust: o.trust ? await loadPublicKey(o.trust) : undefined,
    confirm: async (fp) => {
      out.reporter.warn(`no --trust key given; the bundle is signed by ${fp}`);
      return confirm(`Trust the key ${fp}? Compare it with the fingerprint its maker gave you.`, '--trust ferry.pub');
    },
    reporter: out.reporter,
  };
}

/** A delta cannot bootstrap a machine (its ferry and runtime may be the base's): the installed ferry adds it. */
const deltaStepsText = (file: string, baseId: string) =>
  `On a site server whose store holds ${baseId}: ferry bundle add ${path.basename(file)} --trust /etc/ferry/bundle.pub (a delta is not a first install: the stock-tools bootstrap needs the full bundle).`;

/** The stock-tools check of the bootstrap, one script per platform the bundle carries. */
function siteSteps(file: string, m: Pick<BundleManifest, 'platforms'>): { platform: string; script: string }[] {
  return m.platforms.map((platform) => ({ platform, script: bootstrapScript(path.basename(file), platform) }));
}

function siteStepsText(file: string, m: Pick<BundleManifest, 'platforms'>): string {
  const steps = siteSteps(file, m);
  return [
    `On the site, as root, in the directory holding ${path.basename(file)}${isPartsFile(file) ? ' and its parts' : ''} and ferry.pub (which must come by another channel),`,
    'check the bootstrap with stock tar, openssl and sha256sum before anything from the bundle runs:',
    '',
    ...steps.flatMap((s) => [...(steps.length > 1 ? [`# on ${s.platform}:`] : []), s.script, '']),
  ].join('\n');
}

export function bundleCommand(): Command {
  const bundle = new Command('bundle').description('build, verify, inspect and unpack signed bundles');
  const build = new Command('build')
    .description('pack everything a spec names into one signed archive')
    .argument('<spec>', 'bundle spec, e.g. bundle-spec/kubernetes.yaml')
    .option('--lock <file>', 'lock file (default: images.lock beside bundle-spec/)')
    .requiredOption('--key <file>', 'signing key (ferry.key)')
    .option('--passphrase-file <file>', 'passphrase for an encrypted key')
    .option('--out <file>', 'archive to write (default: <name>-<version>.ferry.tar)')
    .option('--split-size [size]', `also cut the archive into parts of at most SIZE (default ${formatBytes(DEFAULT_PART_SIZE)}, for FAT32)`)
    .option('--update-lock', 're-resolve tags and rewrite the lock before building')
    .option('--offline', 'fetch nothing: build from the cache alone (what an earlier build fetched and resolved), and name whatever it lacks')
    .option('--binary-mirror <prefix=url>', 'fetch binaries, charts and the runtime whose URL starts with PREFIX from URL instead; the bundle keeps upstream URLs (repeatable; the longest PREFIX wins)', collect)
    .option('--since <base>', 'write a delta: only what the base bundle (FILE, FILE.parts.json, or an unpacked bundle.json) lacks; a site applies it only where it holds that base')
    .addHelpText(
      'after',
      examples([
        'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key',
        'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --out k8s.ferry.tar --split-size',
        'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --binary-mirror https://dl.k8s.io=https://artifactory.corp/dl.k8s.io',
        'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --platform linux/amd64',
        'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --offline   # after one build of it on this cache',
        'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --since kubernetes-0.1.0.ferry.tar --out kubernetes-0.2.0.delta.ferry.tar',
      ]),
    );
  addRegistryOptions(addPlatformOption(build)).action(async (specFile: string, o: RegistryFlags & { lock?: string; key: string; passphraseFile?: string; out?: string; splitSize?: string | boolean; updateLock?: boolean; offline?: boolean; binaryMirror?: string[]; platform?: string[]; since?: string }, c: Command) => {
    const out = makeOutput(globals(c));
    const { buildBundle } = await import('../bundle/build.js');
    const { parseBinaryMirror } = await import('../bundle/fetch.js');
    const { loadSpec, narrowPlatforms } = await import('../spec/spec.js');
    const { loadPrivateKey, readPassphrase } = await import('../sign/keys.js');
    const binaryMirrors = (o.binaryMirror ?? []).map(parseBinaryMirror);
    // A bad spec or --platform is reported before the key (and its passphrase) is read.
    const s = narrowPlatforms(await loadSpec(specFile), o.platform);
    const key = await loadPrivateKey(o.key, await readPassphrase(o.passphraseFile));
    const partSize = o.splitSize === undefined || o.splitSize === false ? undefined : o.splitSize === true ? DEFAULT_PART_SIZE : parseSize(o.splitSize);
    if (o.offline && o.updateLock) throw new UsageError(Codes.usage, '--offline and --update-lock cannot go together: resolving tags needs the registries', { hint: 'Drop one of them.' });
    const client = await clientFrom(o, out.reporter, { offline: o.offline });
    const outFile = o.out ?? bundleFileName(s.spec.metadata);
    const r = await buildBundle({ specFile, lockFile: o.lock ?? defaultLock(specFile), key, out: outFile, partSize, client, reporter: out.reporter, updateLock: o.updateLock, offline: o.offline, binaryMirrors, platforms: o.platform, since: o.since });
    out.reporter.done();
    const file = r.parts ?? r.out;
    const delta = r.delta && r.carried ? `\na delta on ${r.delta.base.id}: carries ${formatBytes(r.carried.bytes)} of the full bundle's ${formatBytes(r.carried.fullBytes)} (${((100 * r.carried.bytes) / Math.max(1, r.carried.fullBytes)).toFixed(1)}%); ${r.delta.fromBase.length} entries come from the base, which the site must hold` : '';
    out.result(
      `wrote ${r.out}${r.parts ? ` as parts, listed in ${r.parts}` : ''}: ${r.entries} entries, ${formatBytes(r.size)}\nsigned by ${r.manifest.signer.fingerprint}${delta}\n\n${r.delta ? deltaStepsText(file, r.delta.base.id) : siteStepsText(file, r.manifest)}`,
      { out: r.out, parts: r.parts, size: r.size, entries: r.entries, fingerprint: r.manifest.signer.fingerprint, siteSteps: r.delta ? [] : siteSteps(file, r.manifest), ...(r.delta ? { base: r.delta.base, fromBase: r.delta.fromBase.length, carriedBytes: r.carried?.bytes, fullBytes: r.carried?.fullBytes } : {}) },
    );
  });
  const verify = new Command('verify')
    .description('check the signature, then every entry, as the archive streams; writes nothing')
    .argument('<bundle>', 'FILE or FILE.parts.json')
    .option('--trust <pub>', 'the trusted public key (ferry.pub); without it, confirm the fingerprint at the prompt')
    .addHelpText('after', examples(['ferry bundle verify kubernetes-0.1.0.ferry.tar --trust ferry.pub', 'ferry bundle verify kubernetes-0.1.0.ferry.tar.parts.json --trust ferry.pub --json']));
  verify.action(async (file: string, o: { trust?: string }, c: Command) => {
    const out = makeOutput(globals(c));
    const { verifyBundle } = await import('../bundle/verify.js');
    const r = await verifyBundle(file, await verifyOptions(o, out));
    out.reporter.done();
    const base = r.delta?.manifest;
    out.result(
      `${file}: ok — ${r.manifest.name} ${r.manifest.version}, ${r.entries} entries, ${formatBytes(r.bytes)} checked, signed by ${r.fingerprint}${base ? `\na delta on ${base.base.id} (its checksums.txt sha256 ${base.base.checksums}): ${base.fromBase.length} entries come from it, checked where it is added` : ''}`,
      {
        ok: true,
        name: r.manifest.name,
        version: r.manifest.version,
        entries: r.entries,
        bytes: r.bytes,
        fingerprint: r.fingerprint,
        ...(base ? { base: base.base, fromBase: base.fromBase.length } : {}),
      },
    );
  });
  const unpack = new Command('unpack')
    .description('verify and extract a bundle into a directory; nothing lands there unless all of it checks out')
    .argument('<bundle>', 'FILE or FILE.parts.json')
    .requiredOption('--to <dir>', 'directory to create or replace')
    .option('--trust <pub>', 'the trusted public key (ferry.pub)')
    .option('--allow-downgrade', 'replace an unpacked bundle of the same name with an older one, or one of unknown order (by version, then signed build time)')
    .option('--allow-signer-change', 'replace an unpacked bundle with one signed by another key')
    .addHelpText('after', examples(['ferry bundle unpack kubernetes-0.1.0.ferry.tar --trust ferry.pub --to /var/lib/ferry/bundle   # needs root on a site server (it writes /var/lib/ferry)']));
  unpack.action(async (file: string, o: { trust?: string; to: string; allowDowngrade?: boolean; allowSignerChange?: boolean }, c: Command) => {
    const out = makeOutput(globals(c));
    const { unpackBundle } = await import('../bundle/unpack.js');
    const r = await unpackBundle(file, o.to, { ...(await verifyOptions(o, out)), allowDowngrade: o.allowDowngrade, allowSignerChange: o.allowSignerChange });
    out.reporter.done();
    if (r.already) return out.result(`${r.manifest.name} ${r.manifest.version} is already unpacked in ${r.dir}: nothing to do`, { dir: r.dir, already: true, entries: 0, bytes: 0, fingerprint: r.fingerprint });
    out.result(`unpacked ${r.manifest.name} ${r.manifest.version} into ${r.dir}: ${r.entries} entries, ${formatBytes(r.bytes)}`, { dir: r.dir, already: false, entries: r.entries, bytes: r.bytes, fingerprint: r.fingerprint });
  });
  const inspect = new Command('inspect')
    .description('list what a bundle holds (reads bundle.json; with --trust also checks who signed it; use verify to check the content)')
    .argument('<bundle>', 'FILE or FILE.parts.json')
    .option('--trust <pub>', 'check the signature over the signed table with this key (ferry.pub) and show the verified signer')
    .addHelpText('after', examples(['ferry bundle inspect kubernetes-0.1.0.ferry.tar --trust ferry.pub', 'ferry bundle inspect kubernetes-0.1.0.ferry.tar --json | jq .images']));
  inspect.action(async (file: string, o: { trust?: string }, c: Command) => {
    const out = makeOutput(globals(c));
    const { verifyBundle } = await import('../bundle/verify.js');
    const { readBundleManifest, readBundleDelta } = await import('../bundle/inspect.js');
    const { loadPublicKey } = await import('../sign/keys.js');
    // Without --trust nothing here is checked, so the key bundle.json names is only a claim.
    const signed = o.trust ? await verifyBundle(file, { trust: await loadPublicKey(o.trust), tableOnly: true, reporter: out.reporter }) : undefined;
    const m = signed?.manifest ?? (await readBundleManifest(file));
    const delta = signed ? signed.delta?.manifest : await readBundleDelta(file);
    const signature = signed ? { verified: true, fingerprint: signed.fingerprint } : { verified: false, claimedFingerprint: m.signer?.fingerprint };
    const lines = [
      `${m.name} ${m.version} (format ${m.formatVersion}, ferry ${m.ferryVersion}, created ${m.created})`,
      signed
        ? `signed by ${signed.fingerprint} (verified with --trust; the content is not checked here: run verify)`
        : `signer: UNVERIFIED; bundle.json claims ${m.signer?.fingerprint ?? 'no key'}, which anyone can write (pass --trust ferry.pub to check it)`,
      `platforms: ${m.platforms.join(', ')}${m.kubernetes ? `; Kubernetes ${m.kubernetes.version}` : ''}`,
      `content: ${formatBytes(m.contentSize)} in ${m.entries} entries`,
      ...(delta ? [`a delta on ${delta.base.id}${delta.base.kubernetesVersion ? ` (Kubernetes ${delta.base.kubernetesVersion})` : ''}, checksums.txt sha256 ${delta.base.checksums}: ${delta.fromBase.length} of the entries come from it; a site applies it only where it holds that base`] : []),
      `images (${m.images.length}):`,
      ...m.images.map((i) => `  ${i.ref}  ${i.digest.slice(0, 19)}…  [${i.platforms.join(', ')}]`),
      `charts (${m.charts.length}):`,
      ...m.charts.map((ch) => `  ${ch.name} ${ch.version}  ${ch.ref}`),
      `files (${m.files.length}):`,
      ...m.files.map((f) => `  ${f.path}  ${formatBytes(f.size)}`),
      `runtime (${m.runtime.length}):`,
      ...m.runtime.map((r) => `  ${r.path}  Node.js ${r.version}  ${formatBytes(r.size)}`),
      '',
      delta ? deltaStepsText(file, delta.base.id) : siteStepsText(file, m),
    ];
    out.result(lines.join('\n'), { ...m, signature, siteSteps: delta ? [] : siteSteps(file, m), ...(delta ? { base: delta.base, fromBase: delta.fromBase.length } : {}) });
  });
  const { add, list, prune } = storeCommands();
  for (const cmd of [build, verify, unpack, inspect, add, list, prune]) bundle.addCommand(cmd);
  return bundle;
}

/**
 * The images running pods use, for prune: from --in-use (a file, or - for stdin), else from the
 * cluster when this machine is a server (its admin kubeconfig), else none: no cluster, no pod.
 * A server whose API does not answer is refused: prune cannot know what is in use.
 */
async function imagesInUse(file: string | undefined, out: Output): Promise<{ images: string[]; from: string }> {
  const { promises: fs } = await import('node:fs');
  if (file) {
    const text = file === '-' ? await readStdin() : await fs.readFile(file, 'utf8').catch((e: unknown) => Promise.reject(new UsageError(Codes.usage, `cannot read --in-use ${file}: ${(e as Error).message}`, { hint: 'One image a line; - reads them from stdin.' })));
    const images = text.split('\n').map((l) => l.trim()).filter(Boolean);
    return { images, from: `${images.length} from ${file === '-' ? 'stdin' : file}` };
  }
  const { ADMIN_CONF } = await import('../kube/paths.js');
  if (!(await fs.stat(ADMIN_CONF).then(() => true, () => false))) return { images: [], from: `none (no ${ADMIN_CONF}: this machine runs no cluster)` };
  const { podImages } = await import('../kube/client.js');
  try {
    const images = await podImages(ADMIN_CONF);
    return { images, from: `${images.length} from the pods of the cluster` };
  } catch (e) {
    out.reporter.warn(`cannot list the pods: ${(e as Error).message}`);
    throw new UsageError(Codes.usage, 'prune cannot tell which images running pods use: the cluster did not answer', { hint: "Pass them with --in-use FILE (crictl ps -o json | jq -r '.containers[].image.image' on each node), or try again when the API answers.", cause: e });
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The site store: add, list, prune (`--store`, default the server's store). */
function storeCommands(): { add: Command; list: Command; prune: Command } {
  const storeOpt = (cmd: Command) => cmd.option('--store <dir>', 'the site store (default /var/lib/ferry/store)');
  const openStore = async (dir: string | undefined, create: boolean) => {
    const { SiteStore } = await import('../bundle/store.js');
    const { STORE_DIR } = await import('../install/paths.js');
    return SiteStore.open(dir ?? STORE_DIR, { create });
  };
  const add = storeOpt(
    new Command('add')
      .description('verify a bundle and add it to the site store beside the others: content already there is not stored again; the current bundle stays current')
      .argument('<bundle>', 'FILE or FILE.parts.json')
      .option('--trust <pub>', 'the trusted public key (ferry.pub)'),
  ).addHelpText('after', examples(['ferry bundle add kubernetes-0.1.0.ferry.tar --trust ferry.pub --store ./site-store', 'ferry bundle add kubernetes-0.1.0.ferry.tar --trust /etc/ferry/bundle.pub   # needs root on a site server (it writes /var/lib/ferry/store)']));
  add.action(async (file: string, o: { trust?: string; store?: string }, c: Command) => {
    const out = makeOutput(globals(c));
    const { addedLine } = await import('../bundle/store.js');
    const store = await openStore(o.store, true);
    const r = await store.add(file, await verifyOptions(o, out));
    out.reporter.done();
    out.result(addedLine(r), { id: r.id, name: r.manifest.name, version: r.manifest.version, kubernetesVersion: r.manifest.kubernetes?.version ?? null, fingerprint: r.fingerprint, already: r.already, blobsAdded: r.blobsAdded, filesAdded: r.filesAdded, bytesWritten: r.bytesWritten, store: store.dir });
  });
  const list = storeOpt(new Command('list').description('list the bundles in the site store; * marks the current one')).addHelpText('after', examples(['ferry bundle list --store ./site-store', "ferry bundle list --store ./site-store --json | jq -r '.bundles[].id'"]));
  list.action(async (o: { store?: string }, c: Command) => {
    const out = makeOutput(globals(c));
    const bundles = await (await openStore(o.store, false)).list();
    const rows = bundles.map((b) => `${b.current ? '*' : ' '} ${b.id}  ${b.kubernetesVersion ? `Kubernetes ${b.kubernetesVersion}` : 'no Kubernetes'}  created ${b.created}  signed by ${b.fingerprint}`);
    out.result(rows.length ? rows.join('\n') : '(no bundles)', { bundles: bundles.map(({ id, name, version, kubernetesVersion, fingerprint, current }) => ({ id, name, version, kubernetesVersion, fingerprint, current })) });
  });
  const prune = storeOpt(
    new Command('prune')
      .description('remove from the site store the bundles older than the current one but the previous one, and the content no kept bundle needs; never a bundle whose images running pods use')
      .option('--all', 'remove the previous bundle too: keep only the current one (and any newer one staged)')
      .option('--keep <id>', 'keep exactly these bundles, and the current one (repeatable)', collect)
      .option('--in-use <file>', 'the images running pods use, one a line (refs or digests, as crictl ps or the API report them; - for stdin); default on a server: from the cluster')
      .option('--dry-run', 'list what would be removed, and remove nothing')
      .option('--yes', 'remove without asking'),
  ).addHelpText(
    'after',
    examples([
      'ferry bundle prune --store ./site-store --dry-run',
      'ferry bundle prune --store ./site-store --yes',
      'ferry bundle prune --all --yes   # needs root on a site server (it writes /var/lib/ferry/store; the images in use come from the cluster)',
      "crictl ps -o json | jq -r '.containers[].image.image' | ferry bundle prune --in-use - --store ./site-store --dry-run   # on a site node",
    ]),
  );
  prune.action(async (o: { store?: string; keep?: string[]; all?: boolean; inUse?: string; dryRun?: boolean; yes?: boolean }, c: Command) => {
    const out = makeOutput(globals(c));
    if (o.all && o.keep?.length) throw new UsageError(Codes.usage, '--all and --keep cannot go together', { hint: 'Drop one: --all keeps only the current bundle, --keep keeps the ones named.' });
    const store = await openStore(o.store, false);
    const inUse = await imagesInUse(o.inUse, out);
    const plan = await store.prunePlan({ keep: o.keep, all: o.all, inUse: inUse.images });
    const what = `${plan.bundles.length} bundle(s)${plan.bundles.length ? ` (${plan.bundles.join(', ')})` : ''}, ${plan.blobs.length} blob(s) and ${plan.files.length} file(s), ${formatBytes(plan.bytes)}`;
    const json = { bundles: plan.bundles, blobs: plan.blobs.length, files: plan.files.length, bytes: plan.bytes, unknown: plan.unknown, kept: plan.kept, inUse: inUse.from };
    const keptLines = plan.kept.map((k) => `kept ${k.id}: ${k.why}`);
    const note = [`images in use: ${inUse.from}`, ...keptLines, ...(plan.unknown.length ? [`left ${plan.unknown.length} file(s) under files/ that no bundle listed (not provably ferry's): ${plan.unknown.slice(0, 5).join(', ')}`] : [])].map((l) => `\n${l}`).join('');
    if (!plan.bundles.length && !plan.blobs.length && !plan.files.length) return out.result(`nothing to prune${note}`, { pruned: false, ...json });
    if (o.dryRun) {
      const listing = [...plan.bundles.map((b) => `  bundle ${b}`), ...plan.files.map((f) => `  files/${f}`), ...(plan.blobs.length ? [`  ${plan.blobs.length} blob(s) under images/blobs/sha256/`] : [])].join('\n');
      return out.result(`would remove ${what} (--dry-run: nothing removed)\n${listing}${note}`, { pruned: false, dryRun: true, ...json, blobDigests: plan.blobs.map((h) => `sha256:${h}`), fileList: plan.files });
    }
    if (!o.yes && !(await confirm(`Remove ${what} from ${store.dir}?`, '--yes', false))) {
      throw new UsageError(Codes.usage, 'prune cancelled: nothing was removed', { hint: 'Pass --yes to remove without this question.' });
    }
    await store.prune(plan);
    out.result(`removed ${what}${note}`, { pruned: true, ...json });
  });
  return { add, list, prune };
}
