import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { Parser, type ReadEntry } from 'tar';
import { Codes, IntegrityError } from '../errors.js';
import type { PartsManifest } from './archive.js';
import type { BundleManifest } from './build.js';

/** Reads bundle.json, the first entry, without verifying anything: for inspect and preflights. */
export async function readBundleManifest(input: string): Promise<BundleManifest> {
  let file = input;
  if (input.endsWith('.parts.json')) {
    const m = JSON.parse(await fs.readFile(input, 'utf8')) as PartsManifest;
    file = path.join(path.dirname(input), m.parts[0]!.name);
  }
  return new Promise<BundleManifest>((resolve, reject) => {
    const src = createReadStream(file, { end: 64 << 20 });
    let done = false;
    const finish = (e: Error | undefined, m?: BundleManifest) => {
      if (done) return;
      done = true;
      src.destroy();
      if (e) reject(e);
      else resolve(m!);
    };
    const p = new Parser({
      onReadEntry: (e: ReadEntry) => {
        if (e.path !== 'bundle.json') return finish(new IntegrityError(Codes.bundleFormat, `${input} does not start with bundle.json: it is not a ferry bundle`, { hint: 'Pass a file written by `ferry bundle build`.' }));
        const chunks: Buffer[] = [];
        e.on('data', (c: Buffer) => chunks.push(c));
        e.on('end', () => {
          try {
            finish(undefined, JSON.parse(Buffer.concat(chunks).toString('utf8')) as BundleManifest);
          } catch {
            finish(new IntegrityError(Codes.bundleFormat, `${input}: bundle.json is not JSON`, { hint: 'The bundle is damaged.' }));
          }
        });
      },
    });
    p.on('error', (e: Error) => finish(new IntegrityError(Codes.bundleFormat, `${input} is not a tar archive: ${e.message}`, { hint: 'Pass a file written by `ferry bundle build`.' })));
    p.on('end', () => finish(new IntegrityError(Codes.bundleTruncated, `${input} ends before bundle.json`, { hint: 'The bundle is empty or cut short.' })));
    src.on('error', (e) => finish(new IntegrityError(Codes.bundleFormat, `cannot read ${input}: ${e.message}`, { hint: 'Check the path.' })));
    src.pipe(p);
  });
}
