/** The machine numbers of the ELF header (e_machine). */
const MACHINE = { amd64: 62, arm64: 183 } as const;

/**
 * A stand-in runtime: the 64-byte header of a little-endian ELF64 executable for `arch`, then
 * `text`. Enough for ferry's architecture check; it does not run.
 */
export function elfStandin(arch: keyof typeof MACHINE, text = ''): Buffer {
  const h = Buffer.alloc(64);
  h.writeUInt32BE(0x7f454c46, 0);
  h[4] = 2; // ELFCLASS64
  h[5] = 1; // little-endian
  h[6] = 1; // EV_CURRENT
  h.writeUInt16LE(2, 16); // ET_EXEC
  h.writeUInt16LE(MACHINE[arch], 18);
  return Buffer.concat([h, Buffer.from(text)]);
}
