import net from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/oci/client.js';
import { ConsoleReporter } from '../../src/util/progress.js';

/*
 * A registry that takes every connection and never answers (a stand-in peer: a real TCP listener on
 * loopback that reads and says nothing). ferry says what it waits for and each retry, in plain logs
 * and on a terminal, and gives up on the first byte long before any transfer timeout.
 */
let silent: net.Server;
let host = '';
const sockets = new Set<net.Socket>();
beforeAll(async () => {
  silent = net.createServer((s) => {
    sockets.add(s);
    s.on('data', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  host = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => silent.close(r));
});

function capture(tty: boolean) {
  let text = '';
  const stream = new Writable({ write: (c, _e, cb) => ((text += c.toString()), cb()) }) as unknown as NodeJS.WriteStream;
  return { reporter: new ConsoleReporter({ verbosity: 'normal', stream, tty }), text: () => text };
}

describe('a registry that accepts connections and never answers', () => {
  for (const tty of [false, true]) {
    it(`is named while ferry waits, each retry is said, and the wait for a first byte is bounded apart from the transfer (${tty ? 'terminal' : 'plain log'})`, async () => {
      const out = capture(tty);
      // Over plain HTTP (a mirror is never probed for TLS); the transfer's idle timeout is far longer than the first-byte bound.
      const client = new RegistryClient({ mirrors: { 'upstream.test': `http://${host}` }, retries: 2, backoffMs: 50, maxBackoffMs: 100, timeoutMs: 600_000, firstByteMs: 2_000, waitNoticeMs: 500, reporter: out.reporter });
      const t0 = Date.now();
      const err = await client.getManifest({ registry: 'upstream.test', repository: 'x/y' }, 'v1').then(() => undefined, (e: Error) => e);
      expect(err?.message).toMatch(/no answer within 2 s/);
      // Gave up on the first byte: far inside the 600 s transfer timeout (a generous bound, not a duration to meet).
      expect(Date.now() - t0).toBeLessThan(120_000);
      const text = out.text();
      expect(text).toMatch(new RegExp(`waiting for ${host.replace(/\./g, '\\.')} to answer \\(0\\.5 s so far; gives up at 2 s, attempt 1 of 2\\)`));
      expect(text).toMatch(/no answer within 2 s .*; retry 2 of 2/);
      expect(text).toMatch(/attempt 2 of 2/);
    }, 150_000);
  }
});
