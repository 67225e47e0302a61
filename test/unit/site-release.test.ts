import { readFileSync } from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import { describe, expect, it } from 'vitest';
import { versions } from '../../scripts/site/config.js';
import { olderVersion, previousBootstrapValues, previousSpec } from '../../scripts/site/release.js';
import { parse as parseYaml } from 'yaml';
import { compareBundles } from '../../src/cluster/upgrade-policy.js';
import { parseSpecText } from '../../src/spec/spec.js';
import { kubeadmImages } from '../../src/spec/kubernetes.js';
import { ROOT } from '../helpers/cli.js';

/** The site in a box's two releases: the spec it installs the previous one from, and its pins. */
describe('the site in a box at the previous release', () => {
  const text = readFileSync(path.join(ROOT, 'bundle-spec/kubernetes.yaml'), 'utf8');
  const cur = versions('current');
  const prev = versions('previous');
  const current = parseSpecText(text);
  const previous = parseSpecText(previousSpec(text, cur, prev).text);
  const images = (s: typeof current) => s.images.map((i) => i.name).sort();

  it("versions.env pins, for each release, the etcd, CoreDNS and pause that ferry knows its kubeadm names; they differ only in what each release pins", () => {
    for (const v of [cur, prev]) {
      expect(kubeadmImages(v.KUBERNETES).slice(4)).toEqual([`registry.k8s.io/coredns/coredns:${v.COREDNS}`, `registry.k8s.io/pause:${v.PAUSE}`, `registry.k8s.io/etcd:${v.ETCD.slice(1)}-0`]);
    }
    const differ = Object.keys(cur).filter((k) => cur[k as keyof typeof cur] !== prev[k as keyof typeof prev]);
    expect(differ.sort()).toEqual(['COREDNS', 'ETCD', 'KUBERNETES']);
    expect(semver.minor(cur.KUBERNETES.slice(1)) - semver.minor(prev.KUBERNETES.slice(1))).toBe(1);
  });

  it("the previous release's spec names exactly its kubeadm's images in place of the current one's, every other image and binary unchanged", () => {
    const kept = images(current).filter((i) => !kubeadmImages(cur.KUBERNETES).includes(i));
    expect(images(previous)).toEqual([...kept, ...kubeadmImages(prev.KUBERNETES)].filter((i, n, a) => a.indexOf(i) === n).sort());
    expect(previous.spec.spec.kubernetes?.version).toBe(prev.KUBERNETES);
    const bins = (s: typeof current) => (s.spec.spec.binaries ?? []).map((b) => `${b.name}@${b.version}`);
    expect(bins(previous)).toEqual(bins(current).map((b) => (/^kube(adm|let|ctl)@/.test(b) ? b.replace(cur.KUBERNETES, prev.KUBERNETES) : b)));
    expect(JSON.stringify(previous.spec)).not.toContain(cur.KUBERNETES);
    expect(previous.spec.spec.charts).toEqual(current.spec.spec.charts);
  });

  it("its bundle is older than the default spec's, so ferry's upgrade policy sees the current release's bundle as newer", () => {
    const c = current.spec.metadata;
    const p = previous.spec.metadata;
    expect(p.name).toBe(c.name);
    expect(semver.lt(p.version, c.version)).toBe(true);
    expect(compareBundles(c, p)).toBeGreaterThan(0);
    expect(compareBundles(p, c)).toBeLessThan(0);
    expect([olderVersion('0.1.0'), olderVersion('0.2.3'), olderVersion('2.0.0')]).toEqual(['0.0.1', '0.2.2', '1.0.1']);
    expect(() => olderVersion('0.0.0')).toThrow(/no release version is older/);
  });

  it("ferry-bootstrap's default CoreDNS image is the previous release's in that release's bundle, nothing else of the chart's values changed", () => {
    const values = readFileSync(path.join(ROOT, 'charts/ferry-bootstrap/values.yaml'), 'utf8');
    const before = parseYaml(values) as { images: { coredns: string } };
    const after = parseYaml(previousBootstrapValues(values, cur, prev)) as { images: { coredns: string } };
    expect(after.images.coredns).toBe(kubeadmImages(prev.KUBERNETES)[4]);
    expect(before.images.coredns).toBe(kubeadmImages(cur.KUBERNETES)[4]);
    expect({ ...after, images: { ...after.images, coredns: '' } }).toEqual({ ...before, images: { ...before.images, coredns: '' } });
    expect(() => previousBootstrapValues(values.replace(cur.COREDNS, 'v1.11.1'), cur, prev)).toThrow(/names CoreDNS registry.k8s.io\/coredns\/coredns:v1.11.1/);
  });

  it('a spec that is not at the current release is refused rather than rewritten into a mix of releases', () => {
    expect(() => previousSpec(text.replaceAll(cur.KUBERNETES, 'v1.35.4'), cur, prev)).toThrow(/names Kubernetes v1.35.4; versions.env pins/);
    expect(() => previousSpec(text.replace(`etcd:${cur.ETCD.slice(1)}-0`, 'etcd:3.5.0-0'), cur, prev)).toThrow(/does not list registry.k8s.io\/etcd/);
  });
});
