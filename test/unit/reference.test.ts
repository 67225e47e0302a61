import { describe, expect, it } from 'vitest';
import { apiHost, displayName, formatReference, parseReference } from '../../src/oci/reference.js';

describe('image references normalise like docker and containerd', () => {
  it.each([
    ['nginx', 'docker.io/library/nginx:latest'],
    ['nginx:1.27', 'docker.io/library/nginx:1.27'],
    ['bitnami/redis:7', 'docker.io/bitnami/redis:7'],
    ['index.docker.io/library/nginx:1', 'docker.io/library/nginx:1'],
    ['registry-1.docker.io/library/alpine', 'docker.io/library/alpine:latest'],
    ['registry.k8s.io/pause:3.10', 'registry.k8s.io/pause:3.10'],
    ['localhost/app:dev', 'localhost/app:dev'],
    ['127.0.0.1:5000/team/app:v1', '127.0.0.1:5000/team/app:v1'],
    ['quay.io/cilium/cilium:v1.16.3', 'quay.io/cilium/cilium:v1.16.3'],
  ])('%s → %s', (input, want) => {
    expect(displayName(parseReference(input))).toBe(want);
  });

  it('keeps both tag and digest', () => {
    const d = `sha256:${'a'.repeat(64)}`;
    const r = parseReference(`ghcr.io/org/app:v2@${d}`);
    expect(r).toEqual({ registry: 'ghcr.io', repository: 'org/app', tag: 'v2', digest: d });
    expect(formatReference(r)).toBe(`ghcr.io/org/app:v2@${d}`);
  });

  it('a digest-only reference gets no default tag', () => {
    const r = parseReference(`alpine@sha256:${'b'.repeat(64)}`);
    expect(r.tag).toBeUndefined();
    expect(r.repository).toBe('library/alpine');
  });

  it('docker.io is served by registry-1.docker.io', () => {
    expect(apiHost('docker.io')).toBe('registry-1.docker.io');
    expect(apiHost('quay.io')).toBe('quay.io');
  });

  it.each(['', 'UPPER/case', 'a//b', 'app:bad tag', `x@sha256:${'z'.repeat(64)}`, 'x@sha256:abc', 'foo/-bar', 'a:' + 'x'.repeat(200)])(
    'refuses %j with REF_INVALID and a hint',
    (input) => {
      try {
        parseReference(input);
        expect.unreachable();
      } catch (e) {
        expect((e as { code: string }).code).toBe('REF_INVALID');
        expect((e as { hint: string }).hint).toMatch(/registry\.k8s\.io\/pause/);
      }
    },
  );
});
