/*
 * The default spec at the previous release: what differs is only what versions.env pins per release
 * (Kubernetes with its kubeadm, kubelet and kubectl, etcd, CoreDNS), and a metadata.version older
 * than the default spec's, so that the current release's bundle is an upgrade of it. The images are
 * the ones ferry knows kubeadm of each release to name (src/spec/kubernetes.ts); the fast suite
 * checks that versions.env pins the same.
 */
import semver from 'semver';
import { parseDocument } from 'yaml';
import { kubeadmImages } from '../../src/spec/kubernetes.js';
import type { Versions } from './config.js';

/** A semver version older than `v`: one patch lower, else the previous minor's (or major's) .1. */
export function olderVersion(v: string): string {
  const s = semver.parse(v);
  if (!s) throw new Error(`${v} is not a semver version`);
  if (s.patch > 0) return `${s.major}.${s.minor}.${s.patch - 1}`;
  if (s.minor > 0) return `${s.major}.${s.minor - 1}.1`;
  if (s.major > 0) return `${s.major - 1}.0.1`;
  throw new Error(`no release version is older than ${v}`);
}

/**
 * The spec text `text` (the default spec, at release `cur`) rewritten for release `prev`: its
 * Kubernetes version, kubeadm's images and the kube binaries of that release, and metadata.version
 * (default: older than the spec's). Refuses a spec that does not name `cur`'s release and every
 * image its kubeadm names, so that a drift shows here, not as a bundle of mixed releases.
 */
export function previousSpec(text: string, cur: Versions, prev: Versions, version?: string): { text: string; version: string } {
  const doc = parseDocument(text);
  const k8s = String(doc.getIn(['spec', 'kubernetes', 'version']));
  if (k8s !== cur.KUBERNETES) throw new Error(`the spec names Kubernetes ${k8s}; versions.env pins ${cur.KUBERNETES}`);
  const to = kubeadmImages(prev.KUBERNETES);
  const swap = new Map(kubeadmImages(cur.KUBERNETES).map((ref, i) => [ref, to[i]!]));
  const images = (doc.getIn(['spec', 'images']) as { items: { value: unknown }[] }).items;
  const missing = new Set(swap.keys());
  for (const it of images) {
    const next = typeof it.value === 'string' ? swap.get(it.value) : undefined;
    if (next) {
      missing.delete(it.value as string);
      it.value = next;
    }
  }
  if (missing.size) throw new Error(`the spec does not list ${[...missing].join(', ')}`);
  const binaries = (doc.getIn(['spec', 'binaries']) as { items: { get(k: string): unknown; set(k: string, v: unknown): void }[] }).items;
  for (const b of binaries) if (b.get('version') === cur.KUBERNETES) b.set('version', prev.KUBERNETES);
  doc.setIn(['spec', 'kubernetes', 'version'], prev.KUBERNETES);
  const v = version ?? olderVersion(String(doc.getIn(['metadata', 'version'])));
  doc.setIn(['metadata', 'version'], v);
  doc.setIn(['metadata', 'description'], `kubeadm Kubernetes ${prev.KUBERNETES} (the site in a box's previous release) with flannel, CoreDNS and haproxy`);
  return { text: doc.toString(), version: v };
}

/**
 * ferry-bootstrap's values.yaml at the previous release: its CoreDNS image that of the release.
 * `ferry bundle build` checks every image a chart renders with its default values, and the chart's
 * default is the current release's CoreDNS (install gives it the bundle's CoreDNS instead), so a
 * bundle of the previous release carries the chart as that release would have shipped it.
 */
export function previousBootstrapValues(text: string, cur: Versions, prev: Versions): string {
  const doc = parseDocument(text);
  const want = `registry.k8s.io/coredns/coredns:${cur.COREDNS}`;
  const has = String(doc.getIn(['images', 'coredns']));
  if (has !== want) throw new Error(`ferry-bootstrap's values.yaml names CoreDNS ${has}; versions.env pins ${want}`);
  doc.setIn(['images', 'coredns'], `registry.k8s.io/coredns/coredns:${prev.COREDNS}`);
  return doc.toString();
}
