import { promises as fs } from 'node:fs';
import path from 'node:path';
import { x as untar } from 'tar';
import os from 'node:os';
import type { BundleFile } from '../bundle/format.js';
import { Codes, UsageError } from '../errors.js';
import { registryFqdn } from './answers.js';
import { mayLowerOomScore } from './capabilities.js';
import type { CgroupDriver } from './cgroups.js';
import type { Host } from './host.js';
import { applySysctls, loadModules } from './kernel.js';
import { BIN_DIR, CNI_BIN_DIR, CONTAINERD_CONFIG, ETC_HOSTS, RESOLV_CONF, SYSTEMD_RESOLVED_CONF, REGISTRY_CERT, REGISTRY_KEY, RUNC_PATH, SITE_PORT, STATE_DIR, SYSTEMD_DIR } from './paths.js';
import type { Step } from './plan.js';
import { CONTAINERD_UNIT, containerdConfig, containerdConfigVersion, hostsWithBlock, KUBELET_KUBEADM_DROPIN, KUBELET_UNIT, MODULES_CONF, resolvConf, resolversBefore, SYSCTL_CONF } from './system-files.js';
import { CERTS_SERVICE, CERTS_TIMER, renderCertsUnits, renderServeUnit, renderStateMirrorUnits, STATE_MIRROR_SERVICE, STATE_MIRROR_TIMER } from './units.js';

/*
 * What the first server's plan and a joining node's plan both do to their host. Where the two
 * steps differ only in their id, title, marker or log lines, the shared part is a function here and
 * each plan wraps it in its own markerStep, so that what each prints stays its own.
 */

/** A step done once its marker under STATE_DIR holds `fingerprint` (a string, or what the host's state makes of it). */
export function markerStep(host: Host, id: string, title: string, fingerprint: string | (() => Promise<string>), apply: (log: (l: string) => void) => Promise<void>): Step {
  const print = typeof fingerprint === 'string' ? async () => fingerprint : fingerprint;
  const marker = `${STATE_DIR}/${id}`;
  return {
    id,
    title,
    check: async () => (await host.read(marker)) === (await print()),
    apply: async (log) => {
      await apply(log);
      await host.write(marker, await print());
    },
  };
}

/** This machine's architecture as the bundle names platforms (linux/<arch>); kept here for the plans that import it. */
export { archOf } from '../util/platform.js';
import { archOf } from '../util/platform.js';

/** Installs the bundle's binaries from a host directory: plain files to /usr/local/bin, archives unpacked (executables flattened; CNI plugins to /opt/cni/bin). */
export async function installBinaries(host: Host, fromHostDir: string, files: BundleFile[], log: (l: string) => void): Promise<void> {
  const arch = `linux/${archOf()}`;
  for (const f of files.filter((x) => x.platform === arch)) {
    const src = `${fromHostDir}/${f.path}`;
    if (!f.archive) {
      const dest = f.name === 'runc' ? RUNC_PATH : `${BIN_DIR}/${f.name}`;
      await host.copy(src, dest, 0o755);
      log(`installed ${dest} (${f.name} ${f.version})`);
      continue;
    }
    const dir = f.name === 'cni-plugins' ? CNI_BIN_DIR : BIN_DIR;
    await host.untarExecutables(src, dir);
    log(`unpacked ${f.name} ${f.version} into ${dir}`);
  }
}

/** Kernel modules and sysctls for Kubernetes networking (kernel.ts); redone when ferry's lists change. */
export function kernelStep(host: Host, title: string): Step {
  return markerStep(host, 'kernel', title, MODULES_CONF + SYSCTL_CONF, async (log) => {
    await loadModules(host, log);
    await applySysctls(host, log);
  });
}

/** The site service as containerd and a joining node reach it: by its FQDN, never by an IP. */
/**
 * The node's resolver: its own IP first (the site DNS runs on every node), then the servers'. A node
 * whose own DNS is not up yet falls through to the next at once.
 */
export function resolverStep(host: Host, nameservers: string[], domain: string): Step {
  const list = [...new Set(nameservers)];
  return markerStep(host, 'resolver', `point the resolver at the site DNS (${list.join(', ')})`, list.join(','), async (log) => {
    await host.write(RESOLV_CONF, resolvConf((await host.read(RESOLV_CONF)) ?? '', list, domain));
    log('resolv.conf written');
  });
}

const isLoopback = (ip: string) => /^127\./.test(ip) || ip === '::1';

/**
 * The site DNS's upstreams when the answers name none: the resolvers this server had before ferry
 * (kept in resolv.conf's comments), less loopback and the site's own addresses. A systemd-resolved
 * stub is looked through to the resolvers it uses.
 */
export async function resolversHad(host: Host, siteIps: string[]): Promise<string[]> {
  let had = resolversBefore((await host.read(RESOLV_CONF)) ?? '');
  if (had.some(isLoopback)) had = [...had, ...resolversBefore((await host.read(SYSTEMD_RESOLVED_CONF)) ?? '')];
  return [...new Set(had)].filter((n) => !isLoopback(n) && !siteIps.includes(n) && /^\d+\.\d+\.\d+\.\d+$/.test(n));
}

export const siteServiceUrl = (domain: string) => `https://${registryFqdn(domain)}:${SITE_PORT}`;

/**
 * Writes containerd's config.toml for this node: its cgroup driver, the config version its
 * containerd reads, and restricted OOM scores where the host denies CAP_SYS_RESOURCE.
 */
export async function writeContainerdToml(host: Host, o: { pauseImage: string; cgroupDriver: CgroupDriver; containerdVersion: string | undefined }): Promise<{ configVersion: 2 | 3; restrictOomScoreAdj: boolean }> {
  const configVersion = containerdConfigVersion(o.containerdVersion);
  const restrictOomScoreAdj = !(await mayLowerOomScore());
  await host.write(CONTAINERD_CONFIG, containerdConfig({ pauseImage: o.pauseImage, cgroupDriver: o.cgroupDriver, configVersion, restrictOomScoreAdj }));
  return { configVersion, restrictOomScoreAdj };
}

/** The names a server answers for itself in /etc/hosts: the cluster FQDN, the site service, its own. */
export const serverHostNames = (node: { name: string }, domain: string, fqdn: string) => [fqdn, registryFqdn(domain), `${node.name}.${domain}`, node.name];

/** Replaces ferry's block in /etc/hosts with `entries`, keeping every other line. */
export async function mapHosts(host: Host, entries: { ip: string; names: string[] }[]): Promise<void> {
  await host.write(ETC_HOSTS, hostsWithBlock((await host.read(ETC_HOSTS)) ?? '127.0.0.1\tlocalhost\n', entries));
}

/** What the bundle carries for this machine, as `name version` (the binaries step's title and log). */
export const carriedBinaries = (files: BundleFile[]) => files.filter((f) => f.platform === `linux/${archOf()}`).map((f) => `${f.name} ${f.version}`);

/** Binaries a unit runs (or containerd runs), by unit. */
const UNIT_BINARIES = { 'containerd.service': ['containerd', 'runc'], 'kubelet.service': ['kubelet'] } as const;

/** The units' binaries this machine's architecture lacks in the bundle: a unit without its binary fails at boot. */
export function unitBinariesMissing(files: BundleFile[]): string[] {
  const have = new Set(files.filter((f) => f.platform === `linux/${archOf()}`).map((f) => f.name));
  // runc can ship inside containerd's archive (cri-containerd), so only its absence with no containerd archive counts.
  const archived = files.some((f) => f.name === 'containerd' && f.archive);
  return Object.entries(UNIT_BINARIES).flatMap(([unit, bins]) => bins.filter((b) => !have.has(b) && !(b === 'runc' && archived)).map((b) => `${b} (for ${unit})`));
}

/** Refuses, naming each, when the bundle lacks a binary one of the units runs on this machine's arch. */
export function refuseMissingUnitBinaries(files: BundleFile[]): void {
  const missing = unitBinariesMissing(files);
  if (missing.length) {
    throw new UsageError(Codes.bundleBinaryMissing, `the bundle carries no ${missing.join(', ')} for linux/${archOf()}`, {
      hint: 'Add each binary to spec.binaries for this platform, run `ferry lock` and `ferry bundle build` again, and install the new bundle.',
    });
  }
}

/**
 * Writes and enables the units of containerd and kubelet, and of the site service on a server; returns their names.
 * With the bundle's files, refuses first when a unit's binary is not among them.
 */
export async function installUnits(host: Host, siteService: boolean, files?: BundleFile[]): Promise<string[]> {
  if (files) refuseMissingUnitBinaries(files);
  await host.write(`${SYSTEMD_DIR}/containerd.service`, CONTAINERD_UNIT);
  await host.write(`${SYSTEMD_DIR}/kubelet.service`, KUBELET_UNIT);
  await host.write(`${SYSTEMD_DIR}/kubelet.service.d/10-kubeadm.conf`, KUBELET_KUBEADM_DROPIN);
  const units = ['containerd.service', 'kubelet.service'];
  if (siteService) {
    await host.write(`${SYSTEMD_DIR}/ferry-serve.service`, renderServeUnit({ listen: `0.0.0.0:${SITE_PORT}`, tlsCert: REGISTRY_CERT, tlsKey: REGISTRY_KEY }));
    units.push('ferry-serve.service');
    // Every server keeps a mirror of the site state (src/cluster/mirror.ts).
    const mirror = renderStateMirrorUnits();
    await host.write(`${SYSTEMD_DIR}/${STATE_MIRROR_SERVICE}`, mirror.service);
    await host.write(`${SYSTEMD_DIR}/${STATE_MIRROR_TIMER}`, mirror.timer);
    units.push(STATE_MIRROR_TIMER);
    // And renews its certificates before they expire (ferry certs renew --local).
    const certs = renderCertsUnits();
    await host.write(`${SYSTEMD_DIR}/${CERTS_SERVICE}`, certs.service);
    await host.write(`${SYSTEMD_DIR}/${CERTS_TIMER}`, certs.timer);
    units.push(CERTS_TIMER);
  }
  await host.run('systemctl', ['daemon-reload']);
  await host.run('systemctl', ['enable', ...units]);
  return units;
}
