import { describe, expect, it } from 'vitest';
import { applyObjects, waitForDaemonSets } from '../../src/install/kube.js';
import { renderBootstrap, BOOTSTRAP_NAMESPACE, DNS_NAME } from '../../src/install/bootstrap.js';

const kubeconfig = process.env.FERRY_E2E_KUBECONFIG;

/**
 * Against a real cluster when one is given: applies ferry-bootstrap by server-side apply and waits
 * for the DNS DaemonSet to roll out. Skipped, with a notice, when FERRY_E2E_KUBECONFIG is unset.
 */
describe('ferry-bootstrap on a real cluster (FERRY_E2E_KUBECONFIG)', () => {
  if (!kubeconfig) {
    console.log('notice: FERRY_E2E_KUBECONFIG is not set; the real-cluster test is skipped (no Kubernetes API runs on this machine)');
  }
  it.skipIf(!kubeconfig)('applies the chart with server-side apply and waits for the rollout', async () => {
    const nodeIp = process.env.FERRY_E2E_NODE_IP ?? '127.0.0.1';
    const objects = renderBootstrap({ domain: 'e2e.ferry.test', nodes: [{ name: process.env.FERRY_E2E_NODE ?? 'node-1', ip: nodeIp, role: 'server' }] });
    const applied: string[] = [];
    await applyObjects(kubeconfig!, objects as never, (l) => applied.push(l));
    expect(applied.some((l) => l.includes(`DaemonSet/${BOOTSTRAP_NAMESPACE}/${DNS_NAME}`))).toBe(true);
    await waitForDaemonSets(kubeconfig!, [{ namespace: BOOTSTRAP_NAMESPACE, name: DNS_NAME }], { timeoutMs: 300_000 });
  }, 360_000);
});
