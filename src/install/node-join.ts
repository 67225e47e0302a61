import { createHash } from 'node:crypto';
import { promises as dns } from 'node:dns';
import { createWriteStream, promises as fs } from 'node:fs';
import { drain, getWithRetries } from '../util/http.js';
import type { LookupFunction } from 'node:net';
import path from 'node:path';
import { stringify } from 'yaml';
import { bundleFileOf, parseVersionsJson, partFiles, VERSIONS_JSON, type BundleFile, type VersionsEntry } from '../bundle/format.js';
import { Codes, HostError, IntegrityError, RemoteError } from '../errors.js';
import { loadPublicKey } from '../sign/keys.js';
import { issueServerCert } from '../sign/pki.js';
import type { Reporter } from '../util/progress.js';
import { registryFqdn } from './answers.js';
import { cgroupSettings, cgroupsOnce, checkCgroupV1, type CgroupV1Policy } from './cgroups.js';
import { renderHostsToml } from './containerd.js';
import type { Host } from './host.js';
import { renderKubeadmJoin } from './kubeadm.js';
import { renderLauncher, writeLauncher } from './launcher.js';
import { archOf, installBinaries, installUnits, kernelStep, refuseMissingUnitBinaries, mapHosts, markerStep, resolverStep, serverHostNames, siteServiceUrl, writeContainerdToml } from './node-steps.js';
import { combinePatches, type Patches } from './patches.js';
import { API_PORT, BUNDLE_DIR, FERRY_LAUNCHER, BUNDLE_PUB, CONTAINERD_CERTS_D, DOWNLOADS_DIR, JOIN_CONFIG, KUBELET_CONF, PATCHES_DIR, PKI_DIR, REGISTRY_CERT_PREFIX, SITE_CA, SYSTEM_SITE_CA } from './paths.js';
import type { Step } from './plan.js';
import { serviceRouteStep } from './routes.js';
import { containerdConfigVersion } from './system-files.js';
import { addAndUse } from './site-store.js';
import { backupTimerStep } from './backup-timer.js';

/** What a joining node is told over SSH (on stdin, so secrets never show in a process list). */
export interface NodeJoinPayload {
  role: 'server' | 'agent';
  name: string;
  ip: string;
  domain: string;
  fqdn: string;
  serverIps: string[];
  firstServerIp: string;
  registries: string[];
  pauseImage: string;
  /** The bundle's containerd, whose major version picks the config version. */
  containerdVersion?: string;
  kubernetesVersion: string;
  cgroupV1?: CgroupV1Policy;
  ignoreKubeadmPreflight?: string[];
  /** The Service CIDR, routed through the node's interface where no default route covers it. */
  serviceCidr?: string;
  /** The answers' patches that apply on a joining node. */
  patches?: Pick<Patches, 'kubelet' | 'joinConfiguration'>;
  join: { token: string; caCertHash: string; certificateKey?: string };
}

const KUBELET_PATCH = `${PATCHES_DIR}/kubeletconfiguration+merge.yaml`;

/** How a node reaches the site service: by the registry FQDN, resolved through the servers' DNS. */
export type SiteAddress = Pick<NodeJoinPayload, 'domain' | 'serverIps'>;

/**
 * HTTPS from the site service by its FQDN, resolved through the servers' DNS (not the host's
 * resolver, which may not know the site yet) and checked against the site CA.
 */
export async function siteGet(host: Host, p: SiteAddress, urlPath: string, onBody: (res: NodeJS.ReadableStream) => Promise<void>): Promise<void> {
  const ca = await host.read(SITE_CA);
  if (!ca) throw new HostError(Codes.joinUploadMissing, `the site CA ${SITE_CA} is missing`, { hint: 'ferry join uploads it; run it again.' });
  const resolver = new dns.Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers(p.serverIps);
  const lookup: LookupFunction = (hostname, _opts, cb) => {
    resolver.resolve4(hostname).then(
      (ips) => (_opts as { all?: boolean }).all ? (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, ips.map((address) => ({ address, family: 4 }))) : cb(null, ips[0]!, 4),
      (e: Error) => cb(Object.assign(e, { code: 'ENOTFOUND' }) as NodeJS.ErrnoException, '', 4),
    );
  };
  const url = new URL(`${siteServiceUrl(p.domain)}${urlPath}`);
  let res;
  try {
    res = await getWithRetries(url, { ca, lookup, timeoutMs: 30_000 });
  } catch (e) {
    throw new RemoteError(Codes.joinFailed, `cannot fetch ${url.href}: ${(e as Error).message}`, { hint: `The node resolves registry.${p.domain} through ${p.serverIps.join(', ')}; check that their DNS and the site service answer.`, cause: e });
  }
  if (res.status !== 200) {
    await drain(res);
    throw new RemoteError(Codes.joinFailed, `${url.href} answered ${res.status}`, { hint: 'Check the site service on the servers: systemctl status ferry-serve.' });
  }
  await onBody(res.body);
}

/** The site's versions.json as the binaries step fetched it: what the units step checks its binaries against. */
const FETCHED_VERSIONS = `${DOWNLOADS_DIR}/${VERSIONS_JSON}`;

async function fetchedFiles(host: Host): Promise<BundleFile[] | undefined> {
  const text = await host.read(FETCHED_VERSIONS);
  return text === undefined ? undefined : parseVersionsJson(text, FETCHED_VERSIONS).map(bundleFileOf);
}

async function fetchBinaries(host: Host, p: NodeJoinPayload, log: (l: string) => void): Promise<void> {
  let versions: VersionsEntry[] = [];
  let text = '';
  await siteGet(host, p, `/${VERSIONS_JSON}`, async (res) => {
    for await (const c of res) text += (c as Buffer).toString('utf8');
    versions = parseVersionsJson(text, `the site service's ${VERSIONS_JSON}`);
  });
  // Before any download: a unit without its binary would only fail at boot.
  refuseMissingUnitBinaries(versions.map(bundleFileOf));
  await host.write(FETCHED_VERSIONS, text);
  const mine = versions.filter((v) => v.platform === `linux/${archOf()}`);
  await fetchFiles(host, p, mine, log);
  await installBinaries(host, DOWNLOADS_DIR, mine.map(bundleFileOf), log);
}

/** Fetches versions.json entries from the site service into DOWNLOADS_DIR/files, each checked against its sha256 as it streams. */
export async function fetchFiles(host: Host, p: SiteAddress, entries: VersionsEntry[], log: (l: string) => void): Promise<void> {
  const dir = host.p(DOWNLOADS_DIR);
  for (const v of entries) {
    const dest = path.join(dir, 'files', v.path);
    await fs.mkdir(path.dirname(dest), { recursive: true });
    const tmp = `${dest}.part`;
    const h = createHash('sha256');
    await siteGet(host, p, `/files/${v.path.split('/').map(encodeURIComponent).join('/')}`, async (res) => {
      const out = createWriteStream(tmp, { mode: 0o755 });
      for await (const c of res) {
        h.update(c as Buffer);
        if (!out.write(c)) await new Promise<void>((r) => out.once('drain', () => r()));
      }
      await new Promise<void>((r, j) => out.end((e?: Error | null) => (e ? j(e) : r())));
    });
    const got = h.digest('hex');
    if (got !== v.sha256) {
      await fs.rm(tmp, { force: true });
      throw new IntegrityError(Codes.checksumMismatch, `${v.path} from the site service hashes to ${got}, versions.json says ${v.sha256}`, { hint: 'The site service serves a damaged file; re-unpack the bundle on the servers.' });
    }
    await fs.rename(tmp, dest);
    log(`fetched ${v.path} by FQDN, sha256 ok`);
  }
}

/** The steps a joining node runs on itself, started by ferry join over SSH. */
export function nodeJoinSteps(host: Host, p: NodeJoinPayload, opts: { bundleFile?: string; reporter?: Pick<Reporter, 'warn'>; allowDowngrade?: boolean } = {}): Step[] {
  const server = p.role === 'server';
  const registry = registryFqdn(p.domain);
  const cgroups = cgroupsOnce(host);
  const steps: Step[] = [
    {
      id: 'preflight',
      title: 'check this node (cgroups)',
      always: true,
      check: async () => false,
      apply: async (log) => {
        const cg = await cgroups();
        checkCgroupV1(cg, p.cgroupV1, p.kubernetesVersion, opts.reporter ?? { warn: (m) => log(`warning: ${m}`) }, p.name);
        log(`preflight passed (cgroup v${cg.version})`);
      },
    },
    resolverStep(host, [p.ip, ...p.serverIps], p.domain),
    markerStep(host, 'site-ca', 'trust the site CA', 'ca', async (log) => {
      const ca = await host.read(SITE_CA);
      if (!ca) throw new HostError(Codes.joinUploadMissing, 'the site CA was not uploaded', { hint: 'Run ferry join again.' });
      await host.write(SYSTEM_SITE_CA, ca);
      log('site CA installed');
    }),
    markerStep(host, 'binaries', `fetch the node binaries from ${registry} by FQDN, checking every checksum`, 'v1', (log) => fetchBinaries(host, p, log)),
    // ferry join left the runtime and ferry in place: an operator here types `ferry status`.
    markerStep(host, 'launcher', `put ferry on PATH (${FERRY_LAUNCHER})`, renderLauncher(), () => writeLauncher(host)),
    kernelStep(host, 'load kernel modules and set sysctls'),
    ...(p.serviceCidr ? [serviceRouteStep(host, p.serviceCidr, p.ip)] : []),
    markerStep(host, 'containerd-config', "configure containerd: the node's cgroup driver, mirrors to the site service", async () => `${p.registries.join(',')} ${(await cgroups()).driver} ${containerdConfigVersion(p.containerdVersion)}`, async (log) => {
      const { driver } = await cgroups();
      const { configVersion, restrictOomScoreAdj } = await writeContainerdToml(host, { pauseImage: p.pauseImage, cgroupDriver: driver, containerdVersion: p.containerdVersion });
      log(`config.toml: version ${configVersion}, ${driver} cgroup driver${restrictOomScoreAdj ? ', OOM scores restricted: this host denies CAP_SYS_RESOURCE' : ''}`);
      for (const r of p.registries) await host.write(`${CONTAINERD_CERTS_D}/${r}/hosts.toml`, renderHostsToml(r, [siteServiceUrl(p.domain)], SITE_CA));
      log(`hosts.toml for ${p.registries.join(', ')}`);
    }),
  ];
  if (server) {
    steps.push(
      markerStep(host, 'hosts-join', `map ${p.fqdn} to the first server while joining`, p.firstServerIp, async () => {
        await mapHosts(host, [{ ip: p.firstServerIp, names: [p.fqdn] }]);
      }),
      markerStep(host, 'store', 'verify and unpack the bundle: this server serves it too', 'v1', async (log) => {
        if (!opts.bundleFile) throw new HostError(Codes.joinUploadMissing, 'no bundle was uploaded for this server');
        const trust = await loadPublicKey(host.p(BUNDLE_PUB));
        const r = await addAndUse(host, opts.bundleFile, { trust, allowDowngrade: opts.allowDowngrade });
        for (const f of [...(await partFiles(opts.bundleFile)), opts.bundleFile]) await fs.rm(f, { force: true });
        log(`${r.id} in the store, current`);
        const cert = await issueServerCert({ caDir: host.p(PKI_DIR), names: [registry, 'localhost'], ips: [p.ip, '127.0.0.1'], outPrefix: host.p(REGISTRY_CERT_PREFIX) });
        log(`registry certificate until ${cert.notAfter}`);
      }),
    );
  }
  steps.push(
    markerStep(host, 'units', 'install and enable the systemd units', p.role, async () => {
      const units = await installUnits(host, server, await fetchedFiles(host));
      await host.run('systemctl', ['restart', ...units.filter((u) => u !== 'kubelet.service')]);
    }),
    {
      id: 'kubeadm-join',
      title: `kubeadm join ${p.fqdn}:${API_PORT}${server ? ' as a control-plane node' : ''}`,
      check: async () => !!(await host.read(KUBELET_CONF)),
      apply: async (log) => {
        const cg = cgroupSettings(await cgroups(), p.kubernetesVersion);
        // This node's cgroup settings, then the operator's kubelet patch.
        await host.write(KUBELET_PATCH, stringify(combinePatches(cg.kubelet, p.patches?.kubelet)));
        const config = renderKubeadmJoin({
          kubernetesVersion: p.kubernetesVersion,
          fqdn: p.fqdn,
          token: p.join.token,
          caCertHash: p.join.caCertHash,
          nodeName: p.name,
          nodeIp: p.ip,
          ...(server && p.join.certificateKey ? { controlPlane: { certificateKey: p.join.certificateKey } } : {}),
          ignorePreflightErrors: [...cg.ignorePreflightErrors, ...(p.ignoreKubeadmPreflight ?? [])],
          patchesDir: PATCHES_DIR,
          patch: p.patches?.joinConfiguration,
        });
        await host.write(JOIN_CONFIG, config, 0o600);
        try {
          const r = await host.run('kubeadm', ['join', '--config', JOIN_CONFIG], { timeoutMs: 15 * 60_000 });
          log(r.stdout.split('\n').find((l) => /joined/.test(l)) ?? 'joined');
        } finally {
          // The token and certificate key are needed only while kubeadm runs; a re-run brings fresh ones.
          await fs.rm(host.p(JOIN_CONFIG), { force: true });
        }
      },
    },
  );
  if (server) {
    steps.push(
      markerStep(host, 'hosts-self', `map ${p.fqdn} and ${registry} to this server`, p.ip, async () => {
        await mapHosts(host, [{ ip: p.ip, names: serverHostNames(p, p.domain, p.fqdn) }]);
      }),
      // The key came with the site CA key (ferry join uploads both).
      backupTimerStep(host, { makeKey: false }),
    );
  }
  return steps;
}
