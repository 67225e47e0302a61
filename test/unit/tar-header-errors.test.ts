import { describe, expect, it } from 'vitest';
import { tarOf } from '../../fixtures/hostile.js';
import { readTar } from '../../src/bundle/tarread.js';

async function readAll(b: Buffer): Promise<string[]> {
  const seen: string[] = [];
  for await (const e of readTar((async function* () { yield b; })())) {
    seen.push(e.path);
    for await (const _ of e.data) void _;
  }
  return seen;
}

describe('a tar header whose checksum does not match', () => {
  it('is named by the entry it claims, where it sits and the entry before it', async () => {
    const b = tarOf([
      { name: 'bundle.json', data: Buffer.from('{}') },
      { name: 'images/blobs/sha256/abc', data: Buffer.from('x'.repeat(600)) },
    ]);
    // The second header starts after the first header and its one padded data block; flip a mode byte.
    const at = 512 + 512;
    b[at + 101] = b[at + 101]! ^ 0x01;
    await expect(readAll(b)).rejects.toThrow(/the header of entry "images\/blobs\/sha256\/abc" at byte 1024 \(after bundle\.json\) has a checksum that does not match/);
  });

  it('says so for the first entry', async () => {
    const b = tarOf([{ name: 'bundle.json', data: Buffer.from('{}') }]);
    b[101] = b[101]! ^ 0x01;
    await expect(readAll(b)).rejects.toThrow(/entry "bundle\.json" at byte 0 \(the first entry\)/);
  });
});
