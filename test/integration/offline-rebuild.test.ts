import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HOST_PLATFORM, writeBundleSpec } from '../../fixtures/spec.js';
import { serveDir, type StaticServer } from '../../fixtures/static-server.js';
import { ferry } from '../helpers/cli.js';
import { tmpdir } from '../helpers/peers.js';

/** Issue 12 item 7: a rebuild with a warm cache fetches nothing, so it works with the source gone. */

let work: string;
let web: StaticServer | undefined;

beforeAll(async () => {
  work = await tmpdir('ferry-offline-');
});
afterAll(async () => {
  await web?.close();
  await fs.rm(work, { recursive: true, force: true });
});

describe('a second bundle build', () => {
  it('fetches nothing, checksum documents included: with the web server stopped it succeeds, byte-identical', async () => {
    const dl = path.join(work, 'dl');
    await fs.mkdir(dl, { recursive: true });
    for (const name of ['kubeadm', 'crictl']) {
      const body = Buffer.from(`#!/bin/sh\necho ${name}\n`);
      await fs.writeFile(path.join(dl, name), body);
      await fs.writeFile(path.join(dl, `${name}.sha256`), `${createHash('sha256').update(body).digest('hex')}  ${name}\n`);
    }
    web = await serveDir(dl);
    const spec = await writeBundleSpec(work, {
      name: 'offline',
      platforms: [HOST_PLATFORM],
      binaries: [
        { name: 'kubeadm', version: 'v1.37.2', url: `${web.url}/kubeadm`, checksumUrl: `${web.url}/kubeadm.sha256` },
        { name: 'crictl', version: 'v1.37.0', url: `${web.url}/crictl`, checksumUrl: `${web.url}/crictl.sha256` },
      ],
      runtime: { [HOST_PLATFORM]: process.execPath },
    });
    const env = { FERRY_CACHE_DIR: path.join(work, 'cache') };
    expect((await ferry(['key', 'generate', '--out', path.join(work, 'keys')])).code).toBe(0);
    expect((await ferry(['lock', spec], { env })).code).toBe(0);
    const build = (out: string) => ferry(['bundle', 'build', spec, '--key', path.join(work, 'keys', 'ferry.key'), '--out', out], { env });

    const first = await build(path.join(work, 'first.ferry.tar'));
    expect(first.stderr).not.toMatch(/error\[/);
    expect(first.code).toBe(0);
    expect(web.requests.map((r) => r.url).sort()).toEqual(['/crictl', '/crictl.sha256', '/kubeadm', '/kubeadm.sha256']);

    await web.close();
    web = undefined;
    const second = await build(path.join(work, 'second.ferry.tar'));
    expect(second.stderr).not.toMatch(/error\[/);
    expect(second.code).toBe(0);
    expect((await fs.readFile(path.join(work, 'second.ferry.tar'))).equals(await fs.readFile(path.join(work, 'first.ferry.tar')))).toBe(true);
  }, 120_000);
});
