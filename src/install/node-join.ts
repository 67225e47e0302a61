import { createHash } from 'node:crypto';
import { promises as dns } from 'node:dns';
import { createWriteStream, promises as fs } from 'node:fs';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import path from 'node:path';
import type { BundleManifest } from '../bundle/format.js';
import { unpackBundle } from '../bundle/unpack.js';
import { Codes, FerryError, IntegrityError } from '../errors.js';
import { issueServerCert } from '../sign/pki.js';
import { loadPublicKey } from '../sign/keys.js';
import { stringify } from 'yaml';
import type { Reporter } from '../util/progress.js';
import { mayLowerOomScore } from './capabilities.js';
import { serviceRouteStep } from './routes.js';
import { cgroupSettings, checkCgroupV1, detectCgroups, type CgroupV1Policy, type NodeCgroups } from './cgroups.js';
import { combinePatches, type Patches } from './patches.js';
import { renderHostsToml } from './containerd.js';
import type { Host } from './host.js';
import { applySysctls, loadModules } from './kernel.js';
import { archOf, BUNDLE_DIR, installBinaries, PKI_DIR } from './first-server.js';
import { renderKubeadmJoin } from './kubeadm.js';
import type { Step } from './plan.js';
import { CONTAINERD_UNIT, containerdConfig, containerdConfigVersion, hostsWithBlock, KUBELET_KUBEADM_DROPIN, KUBELET_UNIT, MODULES_CONF, resolvConf, SITE_PORT, SYSCTL_CONF } from './system-files.js';
import { FERRY_ROOT, renderServeUnit } from './units.js';

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

const STATE = `${FERRY_ROOT}/state`;
const CA = `${PKI_DIR}/ca.crt`;
export const JOIN_CONFIG = '/etc/ferry/kubeadm-join.yaml';
/** kubeadm patches of this node: its own kubelet settings over the cluster's kubelet-config. */
export const PATCHES_DIR = '/etc/ferry/kubeadm-patches';
const KUBELET_PATCH = `${PATCHES_DIR}/kubeletconfiguration+merge.yaml`;


/**
 * HTTPS from the site service by its FQDN, resolved through the servers' DNS (not the host's
 * resolver, which may not know the site yet) and checked against the site CA.
 */
async function siteGet(host: Host, p: NodeJoinPayload, urlPath: string, onBody: (res: NodeJS.ReadableStream) => Promise<void>): Promise<void> {
  const ca = await host.read(CA);
  if (!ca) throw new FerryError(Codes.joinFailed, `the site CA ${CA} is missing`, { exit: 'io', hint: 'ferry join uploads it; run it again.' });
  const resolver = new dns.Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers(p.serverIps);
  const lookup: LookupFunction = (hostname, _opts, cb) => {
    resolver.resolve4(hostname).then(
      (ips) => (_opts as { all?: boolean }).all ? (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, ips.map((address) => ({ address, family: 4 }))) : cb(null, ips[0]!, 4),
      (e: Error) => cb(Object.assign(e, { code: 'ENOTFOUND' }) as NodeJS.ErrnoException, '', 4),
    );
  };
  const url = new URL(`https://registry.${p.domain}:${SITE_PORT}${urlPath}`);
  await new Promise<void>((resolve, reject) => {
    const req = https.get(url, { ca, lookup, timeout: 30_000 }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return reject(new FerryError(Codes.joinFailed, `${url.href} answered ${res.statusCode}`, { exit: 'remote', hint: 'Check the site service on the servers: systemctl status ferry-serve.' }));
      }
      onBody(res).then(resolve, reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e) =>
      reject(e instanceof FerryError ? e : new FerryError(Codes.joinFailed, `cannot fetch ${url.href}: ${e.message}`, { exit: 'remote', hint: `The node resolves registry.${p.domain} through ${p.serverIps.join(', ')}; check that their DNS and the site service answer.`, cause: e })),
    );
  });
}

interface VersionEntry {
  name: string;
  version: string;
  platform: string;
  path: string;
  sha256: string;
  size: number;
  archive: boolean;
  url: string;
}

async function fetchBinaries(host: Host, p: NodeJoinPayload, log: (l: string) => void): Promise<void> {
  let versions: VersionEntry[] = [];
  await siteGet(host, p, '/files/versions.json', async (res) => {
    let text = '';
    for await (const c of res) text += (c as Buffer).toString('utf8');
    versions = JSON.parse(text) as VersionEntry[];
  });
  const arch = `linux/${archOf()}`;
  const dir = host.p(`${FERRY_ROOT}/downloads`);
  const mine = versions.filter((v) => v.platform === arch);
  for (const v of mine) {
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
  await installBinaries(host, dir, { files: mine.map((v) => ({ ...v, path: `files/${v.path}` })) } as unknown as BundleManifest, log);
}

/** A step done once its marker holds `fp` (a string, or what the node's state makes of it). */
function marker(host: Host, id: string, fp: string | (() => Promise<string>), title: string, apply: (log: (l: string) => void) => Promise<void>): Step {
  const print = typeof fp === 'string' ? async () => fp : fp;
  return {
    id,
    title,
    check: async () => (await host.read(`${STATE}/${id}`)) === (await print()),
    apply: async (log) => {
      await apply(log);
      await host.write(`${STATE}/${id}`, await print());
    },
  };
}

/** The steps a joining node runs on itself, started by ferry join over SSH. */
export function nodeJoinSteps(host: Host, p: NodeJoinPayload, opts: { bundleFile?: string; reporter?: Pick<Reporter, 'warn'> } = {}): Step[] {
  const server = p.role === 'server';
  const nameservers = server ? [...new Set([...p.serverIps])] : [...new Set([p.ip, ...p.serverIps])];
  let cgroupsP: Promise<NodeCgroups> | undefined;
  const cgroups = () => (cgroupsP ??= detectCgroups(host));
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
    marker(host, 'resolver', nameservers.join(','), `point the resolver at the site DNS (${nameservers.join(', ')})`, async (log) => {
      await host.write('/etc/resolv.conf', resolvConf((await host.read('/etc/resolv.conf')) ?? '', nameservers, p.domain));
      log('resolv.conf written');
    }),
    marker(host, 'site-ca', 'ca', 'trust the site CA', async (log) => {
      const ca = await host.read(CA);
      if (!ca) throw new FerryError(Codes.joinFailed, 'the site CA was not uploaded', { exit: 'io', hint: 'Run ferry join again.' });
      await host.write('/usr/local/share/ca-certificates/ferry-site-ca.crt', ca);
      log('site CA installed');
    }),
    marker(host, 'binaries', 'v1', `fetch the node binaries from registry.${p.domain} by FQDN, checking every checksum`, (log) => fetchBinaries(host, p, log)),
    marker(host, 'kernel', MODULES_CONF + SYSCTL_CONF, 'load kernel modules and set sysctls', async (log) => {
      await loadModules(host, log);
      await applySysctls(host, log);
    }),
    ...(p.serviceCidr ? [serviceRouteStep(host, p.serviceCidr, p.ip)] : []),
    marker(host, 'containerd-config', async () => `${p.registries.join(',')} ${(await cgroups()).driver} ${containerdConfigVersion(p.containerdVersion)}`, "configure containerd: the node's cgroup driver, mirrors to the site service", async (log) => {
      const { driver } = await cgroups();
      const configVersion = containerdConfigVersion(p.containerdVersion);
      const restrictOomScoreAdj = !(await mayLowerOomScore());
      await host.write('/etc/containerd/config.toml', containerdConfig({ pauseImage: p.pauseImage, cgroupDriver: driver, configVersion, restrictOomScoreAdj }));
      log(`config.toml: version ${configVersion}, ${driver} cgroup driver${restrictOomScoreAdj ? ', OOM scores restricted: this host denies CAP_SYS_RESOURCE' : ''}`);
      for (const r of p.registries) await host.write(`/etc/containerd/certs.d/${r}/hosts.toml`, renderHostsToml(r, [`https://registry.${p.domain}:${SITE_PORT}`], CA));
      log(`hosts.toml for ${p.registries.join(', ')}`);
    }),
  ];
  if (server) {
    steps.push(
      marker(host, 'hosts-join', p.firstServerIp, `map ${p.fqdn} to the first server while joining`, async () => {
        await host.write('/etc/hosts', hostsWithBlock((await host.read('/etc/hosts')) ?? '127.0.0.1\tlocalhost\n', [{ ip: p.firstServerIp, names: [p.fqdn] }]));
      }),
      marker(host, 'store', 'v1', 'verify and unpack the bundle: this server serves it too', async (log) => {
        if (!opts.bundleFile) throw new FerryError(Codes.joinFailed, 'no bundle was uploaded for this server', { exit: 'io' });
        const trust = await loadPublicKey(host.p('/etc/ferry/bundle.pub'));
        const r = await unpackBundle(opts.bundleFile, host.p(BUNDLE_DIR), { trust, force: true });
        const { bundleParts } = await import('./join.js');
        for (const f of [...(await bundleParts(opts.bundleFile)), opts.bundleFile]) await fs.rm(f, { force: true });
        log(`unpacked ${r.manifest.name} ${r.manifest.version}`);
        const cert = await issueServerCert({ caDir: host.p(PKI_DIR), names: [`registry.${p.domain}`, 'localhost'], ips: [p.ip, '127.0.0.1'], outPrefix: host.p(`${PKI_DIR}/registry`) });
        log(`registry certificate until ${cert.notAfter}`);
      }),
    );
  }
  steps.push(
    marker(host, 'units', p.role, 'install and enable the systemd units', async () => {
      await host.write('/etc/systemd/system/containerd.service', CONTAINERD_UNIT);
      await host.write('/etc/systemd/system/kubelet.service', KUBELET_UNIT);
      await host.write('/etc/systemd/system/kubelet.service.d/10-kubeadm.conf', KUBELET_KUBEADM_DROPIN);
      const units = ['containerd.service', 'kubelet.service'];
      if (server) {
        await host.write('/etc/systemd/system/ferry-serve.service', renderServeUnit({ listen: `0.0.0.0:${SITE_PORT}`, tlsCert: `${PKI_DIR}/registry.crt`, tlsKey: `${PKI_DIR}/registry.key` }));
        units.push('ferry-serve.service');
      }
      await host.run('systemctl', ['daemon-reload']);
      await host.run('systemctl', ['enable', ...units]);
      await host.run('systemctl', ['restart', ...units.filter((u) => u !== 'kubelet.service')]);
    }),
    {
      id: 'kubeadm-join',
      title: `kubeadm join ${p.fqdn}:6443${server ? ' as a control-plane node' : ''}`,
      check: async () => !!(await host.read('/etc/kubernetes/kubelet.conf')),
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
      marker(host, 'hosts-self', p.ip, `map ${p.fqdn} and registry.${p.domain} to this server`, async () => {
        await host.write('/etc/hosts', hostsWithBlock((await host.read('/etc/hosts')) ?? '', [{ ip: p.ip, names: [p.fqdn, `registry.${p.domain}`, `${p.name}.${p.domain}`, p.name] }]));
      }),
    );
  }
  return steps;
}
