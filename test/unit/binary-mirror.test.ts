import { describe, expect, it } from 'vitest';
import { mirrorUrl, parseBinaryMirror } from '../../src/bundle/fetch.js';

describe('--binary-mirror URL rewriting', () => {
  const mirrors = ['https://dl.k8s.io=http://m/dl', 'https://dl.k8s.io/release=http://m/rel/', 'https://get.helm.sh/=http://m/helm/'].map(parseBinaryMirror);

  it('replaces the longest matching prefix and keeps the rest of the URL', () => {
    expect(mirrorUrl('https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm', mirrors)).toBe('http://m/rel/v1.37.2/bin/linux/amd64/kubeadm');
    expect(mirrorUrl('https://dl.k8s.io/other/x?y=1', mirrors)).toBe('http://m/dl/other/x?y=1');
    expect(mirrorUrl('https://get.helm.sh/helm-v3.21.4-linux-amd64.tar.gz', mirrors)).toBe('http://m/helm/helm-v3.21.4-linux-amd64.tar.gz');
  });

  it('matches a prefix only at a path boundary, and leaves other URLs alone', () => {
    expect(mirrorUrl('https://dl.k8s.io.evil.example/kubeadm', mirrors)).toBe('https://dl.k8s.io.evil.example/kubeadm');
    expect(mirrorUrl('https://dl.k8s.io/releases/x', mirrors)).toBe('http://m/dl/releases/x');
    expect(mirrorUrl('https://github.com/containerd/containerd/releases', mirrors)).toBe('https://github.com/containerd/containerd/releases');
    expect(mirrorUrl('https://dl.k8s.io/x', [])).toBe('https://dl.k8s.io/x');
  });

  it('splits at the first "=", so a mirror URL may carry a query', () => {
    expect(parseBinaryMirror('https://a.example=https://m.example/x?token=abc')).toEqual({ prefix: 'https://a.example', url: 'https://m.example/x?token=abc' });
  });

  it('refuses values that are not PREFIX=URL with a usage error and a hint', () => {
    for (const bad of ['', '=http://m', 'https://a.example=', 'a.example=http://m', 'https://a.example=ftp://m']) {
      let err: { code?: string; exit?: string; hint?: string } | undefined;
      try {
        parseBinaryMirror(bad);
      } catch (e) {
        err = e as typeof err;
      }
      expect(err, bad).toMatchObject({ code: 'USAGE', exit: 'usage' });
      expect(err!.hint).toContain('--binary-mirror PREFIX=URL');
    }
  });
});
