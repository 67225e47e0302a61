import { Command } from 'commander';
import { Codes, DriftError } from '../errors.js';
import { makeOutput } from './output.js';
import { addRegistryOptions, clientFrom, CONCURRENCY, intOption, type RegistryFlags } from './registry-options.js';
import { addPlatformOption, defaultLock, examples, globals } from './shared.js';

export function lockCommand(): Command {
  const cmd = new Command('lock')
    .description('resolve every image tag in a spec to its digest and write the lock')
    .argument('<spec>', 'bundle spec, e.g. bundle-spec/kubernetes.yaml')
    .option('--lock <file>', 'lock file (default: images.lock beside bundle-spec/)')
    .option('--check', 'do not write; exit 3 when a tag has moved or the spec changed')
    .addHelpText(
      'after',
      examples([
        'ferry lock bundle-spec/kubernetes.yaml   # needs the registries the spec names',
        'ferry lock bundle-spec/kubernetes.yaml --check --json   # needs the registries the spec names',
        'ferry lock bundle-spec/kubernetes.yaml --platform linux/amd64   # needs the registries the spec names',
        'ferry lock demo.yaml --lock demo.lock --registry-mirror docker.io=https://mirror.corp   # needs that mirror',
      ]),
    );
  addRegistryOptions(addPlatformOption(cmd)).action(async (specFile: string, o: RegistryFlags & { lock?: string; check?: boolean; platform?: string[] }, c: Command) => {
    const out = makeOutput(globals(c));
    const { movedTags, readLock, resolveAll, writeLock } = await import('../spec/lock.js');
    const { loadSpec, narrowPlatforms } = await import('../spec/spec.js');
    const spec = narrowPlatforms(await loadSpec(specFile), o.platform);
    const lockFile = o.lock ?? defaultLock(specFile);
    const client = await clientFrom(o, out.reporter);
    out.reporter.info(`resolving ${spec.images.length} images from ${specFile}`);
    const fresh = await resolveAll(client, spec, intOption('--concurrency', o.concurrency, CONCURRENCY.pull));
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
