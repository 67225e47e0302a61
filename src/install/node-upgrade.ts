import { promises as fs } from 'node:fs';
import { partFiles, bundleFileOf, type VersionsEntry } from '../bundle/format.js';
import { SiteStore } from '../bundle/store.js';
import { Codes, HostError } from '../errors.js';
import { loadPublicKey } from '../sign/keys.js';
import { cgroupSettings, cgroupsOnce } from './cgroups.js';
import type { Host } from './host.js';
import { fetchFiles } from './node-join.js';
import { installBinaries, markerStep } from './node-steps.js';
import { BUNDLE_PUB, DOWNLOADS_DIR, PATCHES_DIR, STORE_DIR } from './paths.js';
import type { Step } from './plan.js';
import { useStored } from './site-store.js';

/*
 * What a node runs on itself during `ferry upgrade`, started over SSH (or, on the server that runs
 * the upgrade, as a child process) with its orders on stdin:
 *   stage    a server adds the uploaded bundle to its site store, beside the one it runs;
 *   upgrade  kubeadm first (upgrade apply on the first server, upgrade node elsewhere), then the
 *            binaries that changed, containerd and kubelet restarted; a server then runs the bundle.
 * Each step's marker names the bundle, so a re-run after a cut skips what finished and a later
 * upgrade runs them again.
 */

export interface NodeUpgradePayload {
  phase: 'stage' | 'upgrade';
  name: string;
  role: 'server' | 'agent';
  domain: string;
  serverIps: string[];
  /** The id of the bundle the node moves to. */
  bundle: string;
  kubernetesVersion: string;
  /** kubeadm upgrade apply here (the first server); else kubeadm upgrade node. */
  apply?: boolean;
  /** The new bundle's files for this node's platform that differ from the ones it runs. */
  files: VersionsEntry[];
  ignoreKubeadmPreflight?: string[];
}

/** Binaries whose change needs containerd restarted (running containers stay up: their shims are separate). */
const CONTAINERD_BINARIES = new Set(['containerd', 'runc']);

export function nodeUpgradeSteps(host: Host, p: NodeUpgradePayload, o: { bundleFile?: string } = {}): Step[] {
  if (p.phase === 'stage') {
    return [
      markerStep(host, 'upgrade-stage', `add ${p.bundle} to this server's site store, beside the bundle it runs`, p.bundle, async (log) => {
        if (!o.bundleFile) throw new HostError(Codes.joinUploadMissing, 'no bundle was uploaded to stage', { hint: 'ferry upgrade uploads it; run it again.' });
        const trust = await loadPublicKey(host.p(BUNDLE_PUB));
        const store = await SiteStore.open(host.p(STORE_DIR), { create: false });
        const r = await store.add(o.bundleFile, { trust });
        for (const f of [...(await partFiles(o.bundleFile)), o.bundleFile]) await fs.rm(f, { force: true });
        log(`${r.id} ${r.already ? 'was already' : 'is now'} in the store (${r.blobsAdded} blobs and ${r.filesAdded} files new), signed by ${r.fingerprint}`);
      }),
    ];
  }
  const kubeadm = p.files.filter((f) => f.name === 'kubeadm');
  const rest = p.files.filter((f) => f.name !== 'kubeadm');
  const cgroups = cgroupsOnce(host);
  const v = p.kubernetesVersion;
  const steps: Step[] = [
    markerStep(host, 'upgrade-fetch', `fetch ${p.files.map((f) => `${f.name} ${f.version}`).join(', ') || 'no changed binaries'} from the site service by FQDN, checking every checksum`, p.bundle, (log) => fetchFiles(host, p, p.files, log)),
    markerStep(host, 'upgrade-kubeadm', p.apply ? `kubeadm upgrade plan, then kubeadm upgrade apply ${v}` : 'kubeadm upgrade node', p.bundle, async (log) => {
      await installBinaries(host, DOWNLOADS_DIR, kubeadm.map(bundleFileOf), log);
      const patches = (await host.exists(PATCHES_DIR)) ? ['--patches', PATCHES_DIR] : [];
      const ignore = [...cgroupSettings(await cgroups(), v).ignorePreflightErrors, ...(p.ignoreKubeadmPreflight ?? [])];
      const ignoreArg = ignore.length ? [`--ignore-preflight-errors=${ignore.join(',')}`] : [];
      if (p.apply) {
        const plan = await host.run('kubeadm', ['upgrade', 'plan', v, ...ignoreArg], { timeoutMs: 5 * 60_000 });
        for (const l of plan.stdout.split('\n').filter((x) => /upgrade|kube-apiserver|etcd|CoreDNS/i.test(x)).slice(0, 20)) log(`plan: ${l.trim()}`);
        const r = await host.run('kubeadm', ['upgrade', 'apply', v, '--yes', ...patches, ...ignoreArg], { timeoutMs: 20 * 60_000 });
        log(r.stdout.split('\n').find((l) => /SUCCESS/.test(l))?.trim() ?? `kubeadm upgrade apply ${v} done`);
      } else {
        const r = await host.run('kubeadm', ['upgrade', 'node', ...patches, ...ignoreArg], { timeoutMs: 20 * 60_000 });
        log(r.stdout.split('\n').filter(Boolean).pop()?.trim() ?? 'kubeadm upgrade node done');
      }
    }),
    markerStep(host, 'upgrade-binaries', `install ${rest.map((f) => f.name).join(', ') || 'no other binaries'} and restart kubelet`, p.bundle, async (log) => {
      await installBinaries(host, DOWNLOADS_DIR, rest.map(bundleFileOf), log);
      await host.run('systemctl', ['daemon-reload']);
      if (rest.some((f) => CONTAINERD_BINARIES.has(f.name))) {
        await host.run('systemctl', ['restart', 'containerd']);
        log('containerd restarted');
      }
      await host.run('systemctl', ['restart', 'kubelet']);
      log('kubelet restarted');
    }),
  ];
  if (p.role === 'server') {
    steps.push(
      markerStep(host, 'upgrade-use', `make ${p.bundle} the bundle this server runs (its site store's current)`, p.bundle, async (log) => {
        await useStored(host, p.bundle);
        // The site service runs the ferry the upgrade put here; the other servers serve meanwhile.
        await host.run('systemctl', ['try-restart', 'ferry-serve.service']);
        log(`${p.bundle} is current; the site service serves both bundles`);
      }),
    );
  }
  return steps;
}
