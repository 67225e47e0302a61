import { describe, expect, it } from 'vitest';
import { checkRelPath } from '../../src/site/files.js';
import { isValidDigest, isValidRepoName, isValidTag, paginate } from '../../src/site/registry.js';
import { parseRange } from '../../src/site/respond.js';
import { parseListen } from '../../src/site/server.js';

describe('site service request grammar', () => {
  it('accepts repository names by the distribution grammar only', () => {
    for (const ok of ['pause', 'library/busybox', 'coredns/coredns', 'a.b_c__d-e---f/g', 'registry.k8s.io/pause', `${'a/'.repeat(127)}b`]) expect(isValidRepoName(ok), ok).toBe(true);
    for (const bad of ['', 'Pause', '../etc', 'a/../b', 'a//b', '/a', 'a/', '-a', 'a-', 'a..b', 'a:5000/b', 'a\\b', 'a%2fb', `${'a/'.repeat(128)}b`]) {
      expect(isValidRepoName(bad), bad).toBe(false);
    }
  });

  it('accepts sha256 digests and tags, nothing that could name a path', () => {
    expect(isValidDigest(`sha256:${'a'.repeat(64)}`)).toBe(true);
    for (const bad of [`sha256:${'A'.repeat(64)}`, `sha256:${'a'.repeat(63)}`, `sha512:${'a'.repeat(128)}`, `sha256:../${'a'.repeat(61)}`, 'sha256:']) expect(isValidDigest(bad), bad).toBe(false);
    for (const ok of ['3.10', 'v1.31.2', 'latest', '_x', 'a'.repeat(128)]) expect(isValidTag(ok), ok).toBe(true);
    for (const bad of ['', '-x', '.x', '..', 'a/b', 'a\r\nb', 'a'.repeat(129)]) expect(isValidTag(bad), bad).toBe(false);
  });

  it('reads one byte range, ignores other units and multi-ranges, and flags the unsatisfiable', () => {
    expect(parseRange(undefined, 100)).toEqual({ kind: 'full' });
    expect(parseRange('bytes=0-9', 100)).toEqual({ kind: 'partial', start: 0, end: 9 });
    expect(parseRange('bytes=90-', 100)).toEqual({ kind: 'partial', start: 90, end: 99 });
    expect(parseRange('bytes=90-500', 100)).toEqual({ kind: 'partial', start: 90, end: 99 });
    expect(parseRange('bytes=-10', 100)).toEqual({ kind: 'partial', start: 90, end: 99 });
    expect(parseRange('bytes=-1000', 100)).toEqual({ kind: 'partial', start: 0, end: 99 });
    expect(parseRange('bytes=0-99999999999999999999', 100)).toEqual({ kind: 'partial', start: 0, end: 99 });
    expect(parseRange('items=0-1', 100)).toEqual({ kind: 'full' });
    expect(parseRange('bytes=0-1,3-4', 100)).toEqual({ kind: 'full' });
    for (const bad of ['bytes=100-', 'bytes=5-2', 'bytes=abc', 'bytes=-0', 'bytes=-', 'bytes=1-2-3', 'bytes=99999999999999999999-']) {
      expect(parseRange(bad, 100), bad).toEqual({ kind: 'unsatisfiable' });
    }
    expect(parseRange('bytes=0-0', 0)).toEqual({ kind: 'unsatisfiable' });
  });

  it('refuses relative paths that could leave the served root', () => {
    expect(checkRelPath('kubeadm/v1.31.2/linux-amd64/kubeadm')).toEqual(['kubeadm', 'v1.31.2', 'linux-amd64', 'kubeadm']);
    expect(checkRelPath('odd<b>&"x')).toEqual(['odd<b>&"x']);
    for (const bad of ['', '..', '../x', 'a/../b', 'a/./b', '/etc/passwd', 'a//b', 'a/', 'a\\..\\b', 'a\0b']) expect(checkRelPath(bad), JSON.stringify(bad)).toBeUndefined();
  });

  it('pages with n and last, and says when more remain', () => {
    const items = ['a', 'b', 'c', 'd'];
    expect(paginate(items, undefined, undefined)).toEqual({ page: items, more: false });
    expect(paginate(items, 2, undefined)).toEqual({ page: ['a', 'b'], more: true });
    expect(paginate(items, 2, 'b')).toEqual({ page: ['c', 'd'], more: false });
    expect(paginate(items, 10, 'bb')).toEqual({ page: ['c', 'd'], more: false });
    expect(paginate(items, 0, undefined)).toEqual({ page: [], more: true });
  });

  it('parses listen addresses, IPv6 included, and refuses the rest with SERVE_LISTEN', () => {
    expect(parseListen('127.0.0.1:5443')).toEqual({ host: '127.0.0.1', port: 5443 });
    expect(parseListen(':5443')).toEqual({ host: '0.0.0.0', port: 5443 });
    expect(parseListen('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseListen('localhost:80')).toEqual({ host: 'localhost', port: 80 });
    for (const bad of ['5443', '1.2.3.4', '1.2.3.4:70000', '[::1', '[zz]:1', '::1:5443']) expect(() => parseListen(bad), bad).toThrow(expect.objectContaining({ code: 'SERVE_LISTEN' }));
  });
});
