import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Writes a bundle spec for the given refs into dir/bundle-spec/NAME.yaml and returns its path. */
export async function writeSpec(dir: string, images: (string | { ref: string; platforms: string[] })[], opts: { name?: string; platforms?: string[] } = {}): Promise<string> {
  const file = path.join(dir, 'bundle-spec', `${opts.name ?? 'test'}.yaml`);
  await fs.mkdir(path.dirname(file), { recursive: true });
  const lines = images.map((i) => (typeof i === 'string' ? `    - ${i}` : `    - {ref: ${i.ref}, platforms: [${i.platforms.join(', ')}]}`));
  await fs.writeFile(
    file,
    `apiVersion: ferry.dev/v1alpha1\nkind: BundleSpec\nmetadata: {name: ${opts.name ?? 'test'}, version: 0.1.0}\nspec:\n  platforms: [${(opts.platforms ?? ['linux/amd64', 'linux/arm64']).join(', ')}]\n  images:\n${lines.join('\n')}\n`,
  );
  return file;
}
