import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { sectionPath, writeSections } from '../../src/ops/support-bundle.js';
import { Redactor } from '../../src/util/redact.js';
import { tmpdir } from '../helpers/peers.js';

/* Issue 22 item 6: a node's collection stream becomes files, redacted, and only below its directory. */

const SEC = '\x1eferry-section ';

describe('a node collection stream', () => {
  it('keeps every section below the node directory: a name that climbs out is dropped', () => {
    expect(sectionPath('files/var/log/ferry/a.log')).toBe('files/var/log/ferry/a.log');
    expect(sectionPath('/files//etc/./hosts')).toBe('files/etc/hosts');
    for (const bad of ['../../etc/passwd', 'files/../../x', '..', '', '/']) expect(sectionPath(bad), bad).toBeUndefined();
  });

  it('splits into one file per section, each redacted on its own, and writes nothing for a climbing name', async () => {
    const dir = await tmpdir('ferry-sections-');
    const stream = [
      'noise before any section is dropped',
      `${SEC}files/etc/kubernetes/admin.conf`,
      'client-key-data: c2VjcmV0LWtleS1kYXRh',
      'server: https://k8s:6443',
      `${SEC}../../escape.txt`,
      'this must not land anywhere',
      `${SEC}journal/kubelet.log`,
      '-----BEGIN PRIVATE KEY-----',
      'a2V5Ym9keWxpbmU=',
      `${SEC}df.txt`,
      'Filesystem Size',
    ].join('\n');
    const files = await writeSections(Readable.from([Buffer.from(stream)]), path.join(dir, 'node'), new Redactor());
    expect(files).toEqual(['files/etc/kubernetes/admin.conf', 'journal/kubelet.log', 'df.txt']);
    const admin = await fs.readFile(path.join(dir, 'node/files/etc/kubernetes/admin.conf'), 'utf8');
    expect(admin).not.toContain('c2VjcmV0LWtleS1kYXRh');
    expect(admin).toContain('server: https://k8s:6443');
    expect(await fs.readFile(path.join(dir, 'node/journal/kubelet.log'), 'utf8')).not.toContain('a2V5Ym9keWxpbmU=');
    // A key block left open at a section's end does not swallow the next section.
    expect(await fs.readFile(path.join(dir, 'node/df.txt'), 'utf8')).toBe('Filesystem Size\n');
    expect(await fs.readdir(dir)).toEqual(['node']);
    expect((await fs.stat(path.join(dir, 'node/df.txt'))).mode & 0o777).toBe(0o600);
  });
});
