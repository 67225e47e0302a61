import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ByteReader, openSealed, SEAL_TAG_BYTES, SealWriter } from '../../src/util/sealed.js';

/*
 * The sealed stream the backups use: what it refuses is what matters. Frames are cut apart and put
 * back together in the ways an attacker or a bad copy would, and each must fail.
 */

const key = randomBytes(32);
const INFO = 'test v1';
const CHUNK = 64;

async function seal(plain: Buffer, header: Buffer, salt = Buffer.alloc(32, 1), k = key): Promise<Buffer[]> {
  const frames: Buffer[] = [];
  const w = new SealWriter(k, salt, INFO, header, CHUNK, async (f) => void frames.push(f));
  // Written in odd pieces: the chunking is the writer's, not the caller's.
  for (let off = 0; off < plain.length; off += 37) await w.write(plain.subarray(off, off + 37));
  await w.end();
  return frames;
}

async function open(frames: Buffer[], header: Buffer, salt = Buffer.alloc(32, 1), k = key): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of openSealed(new ByteReader((async function* () { yield* frames; })()), k, salt, INFO, header, CHUNK, 'test')) parts.push(p);
  return Buffer.concat(parts);
}

describe('a sealed stream', () => {
  const header = Buffer.from('{"site":"a"}');
  const plain = randomBytes(CHUNK * 5 + 11);

  it('round-trips in chunks of its size, the last one marked, including an empty and an exact-multiple stream', async () => {
    const frames = await seal(plain, header);
    expect(frames).toHaveLength(6);
    expect(frames.slice(0, 5).every((f) => f.length === 4 + CHUNK + SEAL_TAG_BYTES && (f.readUInt32BE(0) & 0x8000_0000) === 0)).toBe(true);
    expect(frames[5]!.readUInt32BE(0)).toBe(0x8000_0000 + 11);
    expect(await open(frames, header)).toEqual(plain);
    expect(await open(await seal(Buffer.alloc(0), header), header)).toEqual(Buffer.alloc(0));
    const exact = randomBytes(CHUNK * 2);
    const ef = await seal(exact, header);
    expect(ef).toHaveLength(2);
    expect(await open(ef, header)).toEqual(exact);
  });

  it('refuses swapped frames, a dropped frame, a dropped last frame, a frame from another stream, another header and another key', async () => {
    const frames = await seal(plain, header);
    const code = (p: Promise<unknown>) => p.then(() => 'opened', (e: { code?: string }) => e.code);
    expect(await code(open([frames[1]!, frames[0]!, ...frames.slice(2)], header))).toBe('BACKUP_CORRUPT');
    expect(await code(open([frames[0]!, ...frames.slice(2)], header))).toBe('BACKUP_CORRUPT');
    // Cut at a frame boundary: every frame checks, but the last never came.
    expect(await code(open(frames.slice(0, 5), header))).toBe('BACKUP_TRUNCATED');
    // A non-last frame relabelled as last (its length word's top bit set) fails its tag.
    const relabelled = Buffer.from(frames[4]!);
    relabelled.writeUInt32BE((relabelled.readUInt32BE(0) | 0x8000_0000) >>> 0);
    expect(await code(open([...frames.slice(0, 4), relabelled], header))).toBe('BACKUP_CORRUPT');
    // Same key, another file (another salt): its frames do not fit this one.
    const other = await seal(plain, header, Buffer.alloc(32, 2));
    expect(await code(open([other[0]!, ...frames.slice(1)], header))).toBe('BACKUP_CORRUPT');
    expect(await code(open(frames, Buffer.from('{"site":"b"}')))).toBe('BACKUP_CORRUPT');
    expect(await code(open(frames, header, undefined, randomBytes(32)))).toBe('BACKUP_CORRUPT');
    expect(await code(open([...frames, Buffer.from('x')], header))).toBe('BACKUP_CORRUPT');
  });

  it('refuses a frame that claims more than the chunk size before reading it', async () => {
    const frames = await seal(plain, header);
    const big = Buffer.from(frames[0]!);
    big.writeUInt32BE(CHUNK + 1);
    await expect(open([big, ...frames.slice(1)], header)).rejects.toMatchObject({ code: 'BACKUP_CORRUPT', message: expect.stringMatching(/claims 65 bytes/) });
  });
});
