import { createReadStream } from 'node:fs';
import { Parser, type ReadEntry } from 'tar';
import { Codes, IntegrityError, UsageError } from '../errors.js';
import { BASE_JSON, parseDelta, type DeltaManifest } from './delta.js';
import { checkBundlePath, isPartsFile, parseBundleManifest, partFiles, TABLE, type BundleManifest } from './format.js';
import { readTar } from './tarread.js';

/** Reads bundle.json, the first entry, without verifying anything: for inspect and preflights. */
export async function readBundleManifest(input: string): Promise<BundleManifest> {
  await checkBundlePath(input);
  let file = input;
  if (isPartsFile(input)) {
    // bundle.json is the first entry, so the first part holds it.
    const first = (await partFiles(input))[0];
    if (!first) throw new IntegrityError(Codes.bundleTruncated, `${input} lists no parts`, { hint: 'Copy FILE.parts.json from the source again.' });
    file = first;
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
        if (e.path !== TABLE[0]) return finish(new IntegrityError(Codes.bundleFormat, `${input} does not start with bundle.json: it is not a ferry bundle`, { hint: 'Pass a file written by `ferry bundle build`.' }));
        const chunks: Buffer[] = [];
        e.on('data', (c: Buffer) => chunks.push(c));
        e.on('end', () => {
          try {
            finish(undefined, parseBundleManifest(Buffer.concat(chunks), input));
          } catch (err) {
            finish(err as Error);
          }
        });
      },
    });
    p.on('error', (e: Error) => finish(new IntegrityError(Codes.bundleFormat, `${input} is not a tar archive: ${e.message}`, { hint: 'Pass a file written by `ferry bundle build`.' })));
    p.on('end', () => finish(new IntegrityError(Codes.bundleTruncated, `${input} ends before bundle.json`, { hint: 'The bundle is empty or cut short.' })));
    src.on('error', (e) => finish(new UsageError(Codes.bundleRead, `cannot read ${input}: ${e.message}`, { hint: 'Check the path.' })));
    src.pipe(p);
  });
}

/** A delta's base.json, read without verifying anything (inspect without --trust); undefined for a full bundle. */
export async function readBundleDelta(input: string): Promise<DeltaManifest | undefined> {
  await checkBundlePath(input);
  const files = isPartsFile(input) ? await partFiles(input) : [input];
  async function* bytes(): AsyncGenerator<Buffer> {
    for (const f of files) yield* createReadStream(f) as AsyncIterable<Buffer>;
  }
  let i = 0;
  for await (const e of readTar(bytes())) {
    if (i++ < TABLE.length) {
      for await (const _ of e.data) void _;
      continue;
    }
    if (e.path !== BASE_JSON || e.size > 64 << 20) return undefined;
    const chunks: Buffer[] = [];
    for await (const c of e.data) chunks.push(c);
    return parseDelta(Buffer.concat(chunks), input);
  }
  return undefined;
}
