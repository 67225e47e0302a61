import { Header, Pax } from 'tar';

/**
 * Deterministic tar headers: zero mtime, uid and gid, no user names, fixed modes. Long paths and
 * sizes of 8 GiB or more get a PAX header, as POSIX says. Bytes are streamed by the caller.
 */
export function fileHeader(p: string, size: number, mode = 0o644): Buffer {
  const fields = { path: p, mode, size, mtime: new Date(0), type: 'File' as const, uid: 0, gid: 0, uname: '', gname: '' };
  const block = Buffer.alloc(512);
  const needPax = new Header(fields).encode(block, 0);
  if (!needPax) return block;
  const pax = new Pax({ path: p, size, mtime: undefined, atime: undefined, ctime: undefined } as ConstructorParameters<typeof Pax>[0]).encode();
  const short = Buffer.alloc(512);
  new Header({ ...fields, path: paxFallbackName(p), size: size < 8 * 1024 ** 3 ? size : 0 }).encode(short, 0);
  return Buffer.concat([pax, short]);
}

/** The ustar name behind a PAX header, for readers without PAX: printable ASCII that fits its field. */
const paxFallbackName = (p: string) => `PaxHeaders/${p.replace(/[^\x20-\x7e]/g, '_').slice(-80)}`;

export function dirHeader(p: string): Buffer {
  const block = Buffer.alloc(512);
  new Header({ path: p.endsWith('/') ? p : `${p}/`, mode: 0o755, size: 0, mtime: new Date(0), type: 'Directory', uid: 0, gid: 0, uname: '', gname: '' }).encode(block, 0);
  return block;
}

export function padding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(1024);
