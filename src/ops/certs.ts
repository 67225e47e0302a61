import { X509Certificate } from 'node:crypto';
import path from 'node:path';
import YAML from 'yaml';
import { Codes, RemoteError } from '../errors.js';
import type { Host } from '../install/host.js';
import { ADMIN_CONF, FERRY_ROOT, REGISTRY_CERT, SITE_CA, STORE_DIR } from '../install/paths.js';
import { shQuote as sq } from '../util/shell.js';

/*
 * Certificates on a node, as `ferry status`, `ferry certs check` and the renewal timer see them: one
 * shell probe (run here, or over SSH) prints the files, a pure parser turns them into days left.
 */

/** Under this many days a certificate is a warning (status degrades). */
export const CERT_WARN_DAYS = 30;
/** Under this many days the renewal timer renews. */
export const CERT_RENEW_DAYS = 90;

export type CertKind = 'site-ca' | 'site-service' | 'kubeadm' | 'kubelet-client';

export interface CertInfo {
  node: string;
  /** apiserver, etcd/server, admin.conf, … */
  name: string;
  kind: CertKind;
  path: string;
  notAfter: string;
  daysLeft: number;
}

const KUBE_PKI = '/etc/kubernetes/pki';
/** kubeadm's certificates that `kubeadm certs renew all` renews (files and kubeconfigs), then the CAs it does not. */
export const KUBEADM_CERT_FILES = ['apiserver', 'apiserver-kubelet-client', 'apiserver-etcd-client', 'front-proxy-client', 'etcd/server', 'etcd/peer', 'etcd/healthcheck-client', 'ca', 'front-proxy-ca', 'etcd/ca'].map((n) => `${KUBE_PKI}/${n}.crt`);
export const KUBEADM_KUBECONFIGS = ['admin.conf', 'super-admin.conf', 'controller-manager.conf', 'scheduler.conf'].map((n) => `/etc/kubernetes/${n}`);
export const KUBELET_CLIENT = '/var/lib/kubelet/pki/kubelet-client-current.pem';
export const KUBELET_CONFIG = '/var/lib/kubelet/config.yaml';
const ETCD_DIR = '/var/lib/etcd';
const CONTAINERD_DIR = '/var/lib/containerd';

/** What the probe reports of a node: its certificate files, kubelet's config and disk use. */
export interface NodeProbe {
  certs: CertInfo[];
  /** kubelet's rotateCertificates, when its config is there. */
  kubeletRotation?: boolean;
  /** Bytes used under ferry's store, containerd and etcd; free bytes on /var/lib. */
  disk: { store?: number; containerd?: number; etcd?: number; ferry?: number; free?: number; size?: number };
}

/** The probe: a POSIX sh script printing `==> file PATH` sections (then the file) and `==> du|df …` lines. */
export function probeScript(root = '/'): string {
  const p = (f: string) => sq(path.posix.join(root, f));
  const files = [SITE_CA, REGISTRY_CERT, ...KUBEADM_CERT_FILES, ...KUBEADM_KUBECONFIGS, KUBELET_CLIENT, KUBELET_CONFIG];
  const lines = files.map((f) => `[ -f ${p(f)} ] && { echo '==> file ${f}'; cat ${p(f)}; echo; }`);
  for (const [k, d] of [['store', STORE_DIR], ['containerd', CONTAINERD_DIR], ['etcd', ETCD_DIR], ['ferry', FERRY_ROOT]] as const) {
    // Bounded: a large containerd tree on a busy disk must not stall the whole probe.
    lines.push(`[ -d ${p(d)} ] && echo "==> du ${k} $(timeout 5 du -sxb ${p(d)} 2>/dev/null | cut -f1)"`);
  }
  lines.push(`echo "==> df $(df -B1 --output=size,avail ${p('/var/lib')} 2>/dev/null | tail -1)"`);
  return `${lines.join('\n')}\ntrue\n`;
}

const DAY_MS = 86_400_000;

/** Days left from now to notAfter, rounded down (negative once expired). */
export const daysLeft = (notAfter: Date, now = new Date()) => Math.floor((notAfter.getTime() - now.getTime()) / DAY_MS);

const PEM_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/;

function certOf(pem: string): X509Certificate | undefined {
  const m = PEM_RE.exec(pem);
  if (!m) return undefined;
  try {
    return new X509Certificate(m[0]);
  } catch {
    return undefined;
  }
}

/** A kubeconfig's client certificate (client-certificate-data of its first user). */
export function kubeconfigCert(text: string): X509Certificate | undefined {
  try {
    const doc = YAML.parse(text) as { users?: { user?: { 'client-certificate-data'?: string } }[] };
    const data = doc?.users?.[0]?.user?.['client-certificate-data'];
    return data ? certOf(Buffer.from(data, 'base64').toString('utf8')) : undefined;
  } catch {
    return undefined;
  }
}

function kindOf(file: string): CertKind {
  if (file === SITE_CA) return 'site-ca';
  if (file === REGISTRY_CERT) return 'site-service';
  if (file === KUBELET_CLIENT) return 'kubelet-client';
  return 'kubeadm';
}

function nameOf(file: string): string {
  if (file === SITE_CA) return 'site-ca';
  if (file === REGISTRY_CERT) return 'site-service';
  if (file === KUBELET_CLIENT) return 'kubelet-client';
  if (file.startsWith(`${KUBE_PKI}/`)) return file.slice(KUBE_PKI.length + 1).replace(/\.crt$/, '');
  return path.posix.basename(file);
}

/** Parses the probe's output (pure). */
export function parseProbe(node: string, text: string, now = new Date()): NodeProbe {
  const out: NodeProbe = { certs: [], disk: {} };
  const sections = text.split(/^==> /m).slice(1);
  for (const s of sections) {
    const nl = s.indexOf('\n');
    const head = (nl < 0 ? s : s.slice(0, nl)).trim();
    const body = nl < 0 ? '' : s.slice(nl + 1);
    const [what, ...rest] = head.split(/\s+/);
    if (what === 'file') {
      const file = rest.join(' ');
      if (file === KUBELET_CONFIG) {
        try {
          const c = YAML.parse(body) as { rotateCertificates?: boolean };
          out.kubeletRotation = c?.rotateCertificates === true;
        } catch {
          out.kubeletRotation = false;
        }
        continue;
      }
      const x = file.endsWith('.conf') ? kubeconfigCert(body) : certOf(body);
      if (!x) continue;
      const notAfter = new Date(x.validTo);
      out.certs.push({ node, name: nameOf(file), kind: kindOf(file), path: file, notAfter: notAfter.toISOString(), daysLeft: daysLeft(notAfter, now) });
    } else if (what === 'du') {
      const n = Number(rest[1]);
      if (rest[0] && Number.isFinite(n) && rest[1] !== undefined && rest[1] !== '') (out.disk as Record<string, number>)[rest[0]] = n;
    } else if (what === 'df') {
      const [size, avail] = rest.map(Number);
      if (Number.isFinite(size) && Number.isFinite(avail)) Object.assign(out.disk, { size, free: avail });
    }
  }
  return out;
}

/** The certificates under `days` left, soonest first. */
export const expiringWithin = (certs: CertInfo[], days: number) => certs.filter((c) => c.daysLeft < days).sort((a, b) => a.daysLeft - b.daysLeft);

/** Runs the probe on this machine. */
export async function probeLocal(host: Host, node: string): Promise<NodeProbe> {
  const r = await host.run('sh', ['-c', probeScript(host.root)], { allowFail: true, timeoutMs: 30_000 });
  return parseProbe(node, r.stdout);
}

export function formatCertTable(certs: CertInfo[]): string {
  const head = ['NODE', 'CERTIFICATE', 'KIND', 'EXPIRES', 'DAYS'];
  const rows = certs.map((c) => [c.node, c.name, c.kind, c.notAfter.slice(0, 16).replace('T', ' '), `${c.daysLeft}${c.daysLeft < CERT_WARN_DAYS ? ' !' : ''}`]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
}

/** The admin kubeconfig's API server is answering (kubectl through it, bounded). */
export async function apiAnswers(host: Host, timeoutS = 8): Promise<boolean> {
  const r = await host.run('kubectl', ['--kubeconfig', host.p(ADMIN_CONF), `--request-timeout=${timeoutS}s`, 'get', '--raw', '/readyz'], { allowFail: true, timeoutMs: (timeoutS + 5) * 1000 }).catch(() => ({ code: 1, stdout: '', stderr: '' }));
  return r.code === 0 && r.stdout.trim() === 'ok';
}

export const certsError = (msg: string, hint: string) => new RemoteError(Codes.certsRenewFailed, msg, { hint });
