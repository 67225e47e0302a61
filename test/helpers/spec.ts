import { writeBundleSpec, type SpecImage } from '../../fixtures/spec.js';

/** Writes a bundle spec for the given refs into dir/bundle-spec/NAME.yaml and returns its path. */
export function writeSpec(dir: string, images: SpecImage[], opts: { name?: string; platforms?: string[] } = {}): Promise<string> {
  return writeBundleSpec(dir, { name: opts.name ?? 'test', platforms: opts.platforms ?? ['linux/amd64', 'linux/arm64'], images });
}
