import { Command } from 'commander';
import { pullImages, pushStore } from '../bundle/images.js';
import { Codes, DriftError } from '../errors.js';
import { Layout } from '../oci/layout.js';
import { formatLock, movedTags, readLock, resolveAll, writeLock } from '../spec/lock.js';
import { bundleSpecSchema } from '../spec/schema.js';
import { loadSpec, narrowPlatforms } from '../spec/spec.js';
import { cacheStoreDir } from '../util/paths.js';
import { formatBytes } from '../util/size.js';
import { makeOutput } from './output.js';
import { addRegistryOptions, clientFrom, intOption, type RegistryFlags } from './registry-options.js';
import { addPlatformOption, defaultLock, examples, globals } from './shared.js';


export function lockCommand(): Command {
  const cmd = new Command('lock')
    .description('resolve every image tag in a spec to its digest and write the lock')
    .argument('<spec>', 'bundle spec, e.g. bundle-spec/kubernetes.yaml')
    .option('--lock <file>', 'lock file (default: images.lock beside bundle-spec/)')
    .option('--check', 'do not write; exit 3 when a tag has moved or the spec changed')
    .addHelpText(
      'after',
      examples(['ferry lock bundle-spec/kubernetes.yaml', 'ferry lock bundle-spec/kubernetes.yaml --check --json', 'ferry lock bundle-spec/kubernetes.yaml --platform linux/amd64', 'ferry lock demo.yaml --lock demo.lock --registry-mirror docker.io=https://mirror.corp']),
    );
  addRegistryOptions(addPlatformOption(cmd)).action(async (specFile: string, o: RegistryFlags & { lock?: string; check?: boolean; platform?: string[] }, c: Command) => {
    const out = makeOutput(globals(c));
    const spec = narrowPlatforms(await loadSpec(specFile), o.platform);
    const lockFile = o.lock ?? defaultLock(specFile);
    const client = await clientFrom(o, out.reporter);
    out.reporter.info(`resolving ${spec.images.length} images from ${specFile}`);
    const fresh = await resolveAll(client, spec, intOption('--concurrency', o.concurrency, 6));
    out.reporter.done();
    if (o.check) {
      const moved = movedTags(await readLock(lockFile), fresh, spec.narrowed);
      out.result(moved.length ? moved.map((m) => `${m.name} ${m.problem}`).join('\n') : `${lockFile} is up to date (${fresh.images.length} images)`, { lock: lockFile, upToDate: moved.length === 0, moved });
      if (moved.length) {
        throw new DriftError(Codes.lockDrift, `${moved.length} of ${fresh.images.length} images differ from ${lockFile}`, {
          hint: `Review the moves above, then run \`ferry lock ${specFile} --lock ${lockFile}\` to accept them.`,
        });
      }
      return;
    }
    await writeLock(lockFile, fresh);
    out.result(`wrote ${lockFile}: ${fresh.images.length} images, ${fresh.images.reduce((n, i) => n + i.platforms.length, 0)} platform manifests`, { lock: lockFile, images: fresh.images });
  });
  return cmd;
}

export function imagesCommand(): Command {
  const images = new Command('images').description('copy images between registries and stores');
  const pull = new Command('pull')
    .description('fill an OCI layout store with every image of a spec, as pinned by its lock')
    .argument('<spec>', 'bundle spec')
    .option('--lock <file>', 'lock file (default: images.lock beside bundle-spec/)')
    .option('--out <dir>', 'store directory, an OCI image layout (default: the cache store)')
    .addHelpText('after', examples(['ferry images pull bundle-spec/kubernetes.yaml --out ./store', 'ferry images pull bundle-spec/kubernetes.yaml --out ./store --platform linux/amd64', 'skopeo inspect oci:./store:registry.k8s.io/pause:3.10']));
  addRegistryOptions(addPlatformOption(pull)).action(async (specFile: string, o: RegistryFlags & { lock?: string; out?: string; platform?: string[] }, c: Command) => {
    const out = makeOutput(globals(c));
    const spec = narrowPlatforms(await loadSpec(specFile), o.platform);
    const lockFile = o.lock ?? defaultLock(specFile);
    const lock = await readLock(lockFile);
    const cache = await Layout.open(cacheStoreDir());
    const store = o.out ? await Layout.open(o.out) : cache;
    const client = await clientFrom(o, out.reporter);
    const r = await pullImages({ client, store, cache, reporter: out.reporter, concurrency: intOption('--concurrency', o.concurrency, 6) }, spec, lock, lockFile);
    out.reporter.done();
    out.result(
      `${store.dir}: ${r.images.length} images; fetched ${r.stats.blobsFetched} blobs (${formatBytes(r.stats.bytesFetched)}), ${r.stats.blobsPresent} already present`,
      { store: store.dir, ...r },
    );
  });
  const push = new Command('push')
    .description('load every image of a store into a registry, such as a site Harbor')
    .requiredOption('--store <dir>', 'store directory (an OCI image layout)')
    .requiredOption('--to <registry[/prefix]>', 'target registry and optional repository prefix')
    .addHelpText('after', examples(['ferry images push --store ./store --to harbor.site.example/ferry --creds harbor.site.example=admin:secret', 'ferry images push --store ./store --to 127.0.0.1:5000']));
  addRegistryOptions(push).action(async (o: RegistryFlags & { store: string; to: string }, c: Command) => {
    const out = makeOutput(globals(c));
    const store = await Layout.open(o.store);
    const client = await clientFrom(o, out.reporter);
    const r = await pushStore({ client, store, reporter: out.reporter, concurrency: intOption('--concurrency', o.concurrency, 4) }, o.to);
    out.reporter.done();
    out.result(r.images.map((i) => `${i.source} → ${i.target}${i.filtered ? ' (platform subset)' : ''}`).join('\n') || 'the store has no named images', r);
  });
  images.addCommand(pull);
  images.addCommand(push);
  return images;
}

export function specCommand(): Command {
  const spec = new Command('spec').description('work with bundle specs');
  spec.addCommand(
    new Command('validate')
      .description('check a spec and print its images')
      .argument('<spec>')
      .addHelpText('after', examples(['ferry spec validate bundle-spec/kubernetes.yaml']))
      .action(async (file: string, _o: unknown, c: Command) => {
        const out = makeOutput(globals(c));
        const s = await loadSpec(file);
        out.result(`${file} is valid: ${s.images.length} images\n${s.images.map((i) => `  ${i.name}  [${i.platforms.map((p) => `${p.os}/${p.architecture}`).join(', ')}]`).join('\n')}`, {
          file,
          images: s.images.map((i) => ({ name: i.name, platforms: i.platforms })),
        });
      }),
  );
  spec.addCommand(
    new Command('schema')
      .description('print the JSON Schema of bundle specs')
      .addHelpText('after', examples(['ferry spec schema > bundle-spec/bundle-spec.schema.json']))
      .action(() => {
        process.stdout.write(`${JSON.stringify(bundleSpecSchema, null, 2)}\n`);
      }),
  );
  return spec;
}

export { formatLock };
