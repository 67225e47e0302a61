import { describe, expect, it } from 'vitest';
import { imagesOfPods } from '../../src/kube/client.js';

/* Issue 19 item 3: what bundle prune is told running pods use, from the pods the API lists. */
describe('the images pods use', () => {
  it('are every container image as the spec names it and as the kubelet resolved it (by digest), of pods not finished', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const images = imagesOfPods([
      {
        spec: { containers: [{ image: 'registry.k8s.io/pause:3.10' }], initContainers: [{ image: 'r.test/init:1' }] },
        status: { phase: 'Running', containerStatuses: [{ image: 'registry.k8s.io/pause:3.10', imageID: `registry.k8s.io/pause@${digest}` }] },
      },
      { spec: { containers: [{ image: 'r.test/pending:1' }] }, status: { phase: 'Pending' } },
      { spec: { containers: [{ image: 'r.test/done:1' }] }, status: { phase: 'Succeeded', containerStatuses: [{ image: 'r.test/done:1', imageID: 'r.test/done@sha256:' + 'b'.repeat(64) }] } },
    ]);
    expect(images).toEqual(['r.test/init:1', 'r.test/pending:1', 'registry.k8s.io/pause:3.10', `registry.k8s.io/pause@${digest}`]);
  });
});
