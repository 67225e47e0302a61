import path from 'node:path';
import { Command } from 'commander';
import { Codes, UsageError } from '../errors.js';
import { exists } from '../util/fsx.js';
import { cacheStoreDir } from '../util/paths.js';
import { formatBytes } from '../util/size.js';
import { makeOutput } from './output.js';
import { addRegistryOptions, clientFrom, CONCURRENCY, intOption, type RegistryFlags } from './registry-options.js';
import { addPlatformOption, defaultLock, examples, globals } from './shared.js';

/** A store to read from must exist: opening one creates it, and an empty push exits 0 having done nothing. */
async function requireStore(dir: string): Promise<void> {
  if (await exists(path.join(dir, 'index.json'))) return;
  const there = await exists(dir);
  throw new UsageError(Codes.storeNotFound, there ? `${dir} is not an OCI image layout (it has no index.json)` : `store ${dir} does not exist`, {
    hint: 'Pass the directory `ferry images pull --out DIR` filled, or images/ inside the directory `ferry bundle unpack` wrote.',
  });
}

export function imagesCommand(): Command {
  const images = new Command('images').description('copy images between registries and stores');
  const pull = new Command('pull')
    .description('fill an OCI layout store with every image of a spec, as pinned by its lock')
    .argument('<spec>', 'bundle spec')
    .option('--lock <file>', 'lock file (default: images.lock beside bundle-spec/)')
    .option('--out <dir>', 'store directory, an OCI image layout (default: the cache store)')
    .option('--with-referrers', "also copy each image's referrers (signatures, SBOMs: the registry's referrers API, else its sha256-<hex> referrers tag); a bundle built from the cache carries them")
    .addHelpText('after', examples(['ferry images pull bundle-spec/kubernetes.yaml --out ./store', 'ferry images pull bundle-spec/kubernetes.yaml --out ./store --platform linux/amd64', 'ferry images pull bundle-spec/kubernetes.yaml --with-referrers        # signatures and SBOMs too, for the next bundle build', 'skopeo inspect oci:./store:registry.k8s.io/pause:3.10          # once a spec with that image has been pulled']));
  addRegistryOptions(addPlatformOption(pull)).action(async (specFile: string, o: RegistryFlags & { lock?: string; out?: string; platform?: string[]; withReferrers?: boolean }, c: Command) => {
    const out = makeOutput(globals(c));
    const { pullImages } = await import('../bundle/images.js');
    const { Layout } = await import('../oci/layout.js');
    const { readLock } = await import('../spec/lock.js');
    const { loadSpec, narrowPlatforms } = await import('../spec/spec.js');
    const spec = narrowPlatforms(await loadSpec(specFile), o.platform);
    const lockFile = o.lock ?? defaultLock(specFile);
    const lock = await readLock(lockFile);
    const cache = await Layout.open(cacheStoreDir());
    const store = o.out ? await Layout.open(o.out) : cache;
    const client = await clientFrom(o, out.reporter);
    const r = await pullImages({ client, store, cache, reporter: out.reporter, concurrency: intOption('--concurrency', o.concurrency, CONCURRENCY.pull) }, spec, lock, lockFile, { withReferrers: o.withReferrers === true });
    out.reporter.done();
    const refs = r.images.reduce((n, i) => n + (i.referrers?.length ?? 0), 0);
    out.result(
      `${store.dir}: ${r.images.length} images${o.withReferrers ? ` and ${refs} referrers` : ''}; fetched ${r.stats.blobsFetched} blobs (${formatBytes(r.stats.bytesFetched)}), ${r.stats.blobsPresent} already present`,
      { store: store.dir, ...r },
    );
  });
  const push = new Command('push')
    .description('load every image of a store into a registry, such as a site Harbor')
    .requiredOption('--store <dir>', 'store directory (an OCI image layout)')
    .requiredOption('--to <registry[/prefix]>', 'target registry and optional repository prefix')
    .addHelpText('after', examples(['ferry images push --store ./store --to harbor.site.example/ferry --creds harbor.site.example=admin:secret   # needs that registry', 'ferry images push --store ./store --to 127.0.0.1:5000          # needs a registry there (docker-registry serve)']));
  addRegistryOptions(push, CONCURRENCY.push).action(async (o: RegistryFlags & { store: string; to: string }, c: Command) => {
    const out = makeOutput(globals(c));
    const { pushStore } = await import('../bundle/images.js');
    const { Layout } = await import('../oci/layout.js');
    await requireStore(o.store);
    const store = await Layout.open(o.store);
    const client = await clientFrom(o, out.reporter);
    const r = await pushStore({ client, store, reporter: out.reporter, concurrency: intOption('--concurrency', o.concurrency, CONCURRENCY.push) }, o.to);
    out.reporter.done();
    out.result(r.images.map((i) => `${i.source} → ${i.target}${i.filtered ? ' (platform subset)' : ''}`).join('\n') || 'the store has no named images', r);
  });
  images.addCommand(pull);
  images.addCommand(push);
  return images;
}
