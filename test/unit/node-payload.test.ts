import { describe, expect, it } from 'vitest';
import { FerryError } from '../../src/errors.js';
import type { NodeJoinPayload } from '../../src/install/node-join.js';
import { NODE_JOIN_SCHEMA, readNodeJoinPayload } from '../../src/ops/node-op.js';

const token = 'abcdef.0123456789abcdef';
const good: Required<NodeJoinPayload> = {
  role: 'server',
  name: 'k8s-server-02',
  ip: '10.0.0.12',
  domain: 'site.test',
  fqdn: 'k8s-cluster.site.test',
  serverIps: ['10.0.0.11'],
  firstServerIp: '10.0.0.11',
  registries: ['registry.k8s.io'],
  pauseImage: 'registry.k8s.io/pause:3.10',
  containerdVersion: '2.1.4',
  kubernetesVersion: 'v1.33.2',
  cgroupV1: 'refuse',
  ignoreKubeadmPreflight: ['Swap'],
  serviceCidr: '10.96.0.0/12',
  patches: { kubelet: { maxPods: 200 }, joinConfiguration: {} },
  join: { token, caCertHash: `sha256:${'a'.repeat(64)}`, certificateKey: 'b'.repeat(64) },
};

const refusal = (text: string) => {
  try {
    readNodeJoinPayload(text);
  } catch (e) {
    return e as FerryError;
  }
  throw new Error('accepted');
};

describe("node-join's payload, checked against its schema on the node", () => {
  it('accepts a payload with every field the type declares, and the schema lists exactly those fields', () => {
    expect(readNodeJoinPayload(JSON.stringify(good))).toEqual(good);
    expect(Object.keys(NODE_JOIN_SCHEMA.properties as object).sort()).toEqual(Object.keys(good).sort());
  });

  it('refuses a payload that is not JSON with NODE_PAYLOAD_INVALID, not a crash', () => {
    const e = refusal('{"role": "server", ');
    expect(e).toBeInstanceOf(FerryError);
    expect(e.code).toBe('NODE_PAYLOAD_INVALID');
    expect(e.exit).toBe('usage');
    expect(e.message).toMatch(/not JSON/);
    expect(refusal('').message).toMatch(/empty/);
  });

  it('names each wrong field: a missing one, an unknown one, a wrong type, a bad role, without echoing the token', () => {
    const { fqdn: _f, ...rest } = good;
    const e = refusal(JSON.stringify({ ...rest, role: 'worker', serverIps: '10.0.0.11', extra: 1, join: { ...good.join, token: 5 } }));
    expect(e.code).toBe('NODE_PAYLOAD_INVALID');
    expect(e.message).toMatch(/is missing required field "fqdn"/);
    expect(e.message).toMatch(/extra is not a known field/);
    expect(e.message).toMatch(/serverIps must be array/);
    expect(e.message).toMatch(/role must be server or agent/);
    expect(e.message).toMatch(/join\.token must be string/);
    expect(e.hint).toMatch(/same bundle/);
    const leaky = refusal(JSON.stringify({ ...good, join: { ...good.join, caCertHash: token } }));
    expect(leaky.message).toMatch(/join\.caCertHash must match pattern/);
    expect(leaky.message).not.toContain(token);
  });
});
