import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { InstallAnswers } from '../../src/install/answers.js';
import { renderKubeadmInit, renderKubeadmJoin } from '../../src/install/kubeadm.js';
import { execFileP, tmpdir } from '../helpers/peers.js';
import { siteBinary } from '../helpers/site-cache.js';

/**
 * ferry's kubeadm documents through the real kubeadm's strict decoding (`kubeadm config validate`:
 * unknown fields and bad values fail). Debian ships no kubeadm: this uses FERRY_KUBEADM, or the one
 * the site suite builds, and skips when neither exists.
 */
const kubeadm = siteBinary('kubernetes', 'kubeadm', 'FERRY_KUBEADM');
const version = kubeadm ? execFileSync(kubeadm, ['version', '-o', 'short'], { encoding: 'utf8' }).trim() : '';

const answers: InstallAnswers = { apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'site.test', node: { name: 'k8s-server-01', ip: '10.0.0.11' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12' };

async function validate(text: string): Promise<{ code: number; out: string }> {
  const f = path.join(await tmpdir(), 'kubeadm.yaml');
  await fs.writeFile(f, text);
  return execFileP(kubeadm!, ['config', 'validate', '--config', f]).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? 1, out: `${e.stdout}${e.stderr}` }),
  );
}

describe.skipIf(!kubeadm)(`ferry's kubeadm config against the real kubeadm ${version}`, () => {
  it('accepts the init documents of a cgroup v1 node (failCgroupV1, ignorePreflightErrors)', async () => {
    const r = await validate(renderKubeadmInit({ answers, kubernetesVersion: version, cgroups: { version: 1, driver: 'cgroupfs' } }));
    expect(r.out).toContain('ok');
    expect(r.code).toBe(0);
  });

  it('accepts the answers patches of the README: kubelet, kube-proxy (its own document), cluster and init', async () => {
    const patched = renderKubeadmInit({
      answers: {
        ...answers,
        patches: {
          kubelet: { failSwapOn: false },
          kubeProxy: { conntrack: { maxPerCore: 0 } },
          clusterConfiguration: { apiServer: { extraArgs: [{ name: 'audit-log-maxage', value: '7' }] } },
          initConfiguration: { nodeRegistration: { taints: [] } },
        },
      },
      kubernetesVersion: version,
      cgroups: { version: 2, driver: 'systemd' },
    });
    expect(patched).toContain('kind: KubeProxyConfiguration');
    const r = await validate(patched);
    expect(r.code, r.out).toBe(0);
  });

  it('accepts the JoinConfiguration of a control-plane node', async () => {
    const join = renderKubeadmJoin({
      kubernetesVersion: version,
      fqdn: 'k8s-cluster.site.test',
      token: 'abcdef.0123456789abcdef',
      caCertHash: `sha256:${'a'.repeat(64)}`,
      nodeName: 'k8s-server-02',
      nodeIp: '10.0.0.12',
      controlPlane: { certificateKey: '0'.repeat(64) },
      ignorePreflightErrors: ['SystemVerification'],
      patchesDir: '/etc/ferry/kubeadm-patches',
      patch: { nodeRegistration: { imagePullSerial: false } },
    });
    const r = await validate(join);
    expect(r.code, r.out).toBe(0);
  });

  it("accepts the answers' ignoreKubeadmPreflight, all included", async () => {
    for (const ignoreKubeadmPreflight of [['NumCPU', 'Mem'], ['all']]) {
      const r = await validate(renderKubeadmInit({ answers: { ...answers, ignoreKubeadmPreflight }, kubernetesVersion: version, cgroups: { version: 1, driver: 'cgroupfs' } }));
      expect(r.code, r.out).toBe(0);
    }
  });

  it('is strict: a field kubeadm does not know fails (so the checks above can fail)', async () => {
    const r = await validate(renderKubeadmInit({ answers, kubernetesVersion: version }).replace('kind: KubeletConfiguration', 'kind: KubeletConfiguration\nnoSuchField: 1'));
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/unknown field "noSuchField"/);
  });
});
