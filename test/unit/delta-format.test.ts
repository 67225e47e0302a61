import { describe, expect, it } from 'vitest';
import { deltaBytes, fromBaseOf, ownPath, parseDelta, type DeltaManifest } from '../../src/bundle/delta.js';

/* Issue 19 item 2: a delta's base.json, as verify and the store read it. */
const h = (c: string) => c.repeat(64);
const good: DeltaManifest = { formatVersion: 1, base: { id: 'k8s-1.0.0', name: 'k8s', version: '1.0.0', checksums: h('a') }, fromBase: ['files/kubeadm/v1/linux-amd64/kubeadm', 'install.sh'] };

describe("a delta's base.json", () => {
  it('takes from the base only the entries it lists with the same checksum, never bundle.json', () => {
    const full = new Map([['bundle.json', h('1')], ['install.sh', h('2')], ['images/blobs/sha256/' + h('3'), h('3')], ['files/kubelet/v2/linux-amd64/kubelet', h('4')]]);
    const base = new Map([['bundle.json', h('1')], ['install.sh', h('2')], ['images/blobs/sha256/' + h('3'), h('3')], ['files/kubelet/v2/linux-amd64/kubelet', h('5')]]);
    expect(fromBaseOf(full, base)).toEqual(['images/blobs/sha256/' + h('3'), 'install.sh']);
  });

  it('reads back what the build writes, and refuses one that takes the signed table or an unsafe path from the base', () => {
    expect(parseDelta(deltaBytes(good), 'd')).toEqual(good);
    for (const p of ['checksums.txt', 'base.json.sig', '../etc/passwd', '/abs']) {
      expect(() => parseDelta(deltaBytes({ ...good, fromBase: [p] }), 'd')).toThrow(expect.objectContaining({ exit: 'integrity' }));
    }
    expect(() => parseDelta(Buffer.from('{"formatVersion":1,"base":{"id":"x"}}'), 'd')).toThrow(/not a ferry delta manifest/);
  });

  it("places the bundle's own entries where a store's view keeps them", () => {
    expect(['files/versions.json', 'images/index.json', 'images/oci-layout', 'install.sh', 'runtime/linux-amd64/node'].map(ownPath)).toEqual(['versions.json', 'index.json', 'oci-layout', 'install.sh', 'runtime/linux-amd64/node']);
  });
});
