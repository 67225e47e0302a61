import { QUIET_DEPRECATIONS } from '../bundle/format.js';
import { Codes, UsageError } from '../errors.js';
import { ADMIN_CONF, BUNDLE_DIR, FERRY_MJS, FERRY_ROOT, RUNTIME_NODE } from './paths.js';

/* systemd units ferry installs on the nodes. */

export interface ServeUnitOptions {
  /** --listen of the site service, e.g. 0.0.0.0:5443 */
  listen: string;
  tlsCert: string;
  tlsKey: string;
  bundleDir?: string;
  /** The bundled Node.js runtime. */
  node?: string;
  /** The single-file CLI. */
  ferry?: string;
  /** Run as this user instead of root (it must be able to read the TLS key). */
  user?: string;
}


/** A oneshot ferry service that writes only under FERRY_ROOT (the mirror and the backups). */
const FERRY_ROOT_ONLY = ['NoNewPrivileges=yes', 'ProtectSystem=strict', `ReadWritePaths=${systemdArg(FERRY_ROOT)}`, 'ProtectHome=yes', 'PrivateTmp=yes'];
/** One ExecStart argument, quoted for systemd: `%` and `$` would otherwise expand. */
export function systemdArg(a: string): string {
  if (!a || /[\x00-\x1f\x7f]/.test(a)) {
    throw new UsageError(Codes.unitInvalid, `cannot put ${JSON.stringify(a)} in a systemd unit`, { hint: 'Paths and addresses in units must be non-empty and free of control characters.' });
  }
  const escaped = a.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /[\s"'\\;]/.test(escaped) ? `"${escaped.replace(/[\\"]/g, (c) => `\\${c}`)}"` : escaped;
}

function absolute(p: string, what: string): string {
  if (!p.startsWith('/')) throw new UsageError(Codes.unitInvalid, `${what} must be an absolute path, not "${p}"`, { hint: 'systemd needs absolute paths in units.' });
  return p;
}

/**
 * ferry-serve.service: the site service on a server, up before kubelet so that image pulls for the
 * control plane find it. Hardened: read-only view of the system and of ferry's own files, no new
 * privileges, no kernel or device access. MemoryDenyWriteExecute stays off because V8 needs it.
 */
export function renderServeUnit(o: ServeUnitOptions): string {
  const node = absolute(o.node ?? RUNTIME_NODE, 'the runtime');
  const ferry = absolute(o.ferry ?? FERRY_MJS, 'ferry.mjs');
  const bundle = absolute(o.bundleDir ?? BUNDLE_DIR, 'the bundle directory');
  const cert = absolute(o.tlsCert, 'the TLS certificate');
  const key = absolute(o.tlsKey, 'the TLS key');
  const port = Number(/:(\d+)$/.exec(o.listen)?.[1] ?? NaN);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError(Codes.unitInvalid, `--listen "${o.listen}" needs a fixed port for a unit`, { hint: 'Write it as HOST:PORT, e.g. 0.0.0.0:5443.' });
  }
  const exec = [node, ...QUIET_DEPRECATIONS, ferry, 'serve', '--bundle', bundle, '--listen', o.listen, '--tls-cert', cert, '--tls-key', key].map(systemdArg).join(' ');
  const lowPort = port < 1024;
  const paths = [...new Set([FERRY_ROOT, bundle, cert, key])];
  const readOnly = paths.filter((p) => !paths.some((q) => q !== p && p.startsWith(`${q}/`))).map(systemdArg).join(' ');
  const user = o.user ? systemdArg(o.user) : undefined;
  return [
    '# Written by ferry. The site service: OCI images and node binaries for this site.',
    '[Unit]',
    'Description=ferry site service (OCI registry and file repository)',
    'Wants=network-online.target',
    'After=network-online.target',
    'Before=kubelet.service',
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${exec}`,
    ...(user ? [`User=${user}`, `Group=${user}`] : []),
    // One worker per core (serve's default --workers auto): SIGHUP to the primary rolls them without
    // refusing a connection; on stop, the primary alone gets SIGTERM and drains its workers.
    'ExecReload=/bin/kill -HUP $MAINPID',
    'KillMode=mixed',
    'Restart=always',
    'RestartSec=2s',
    'TimeoutStopSec=20s',
    'KillSignal=SIGTERM',
    'LimitNOFILE=65536',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    `ReadOnlyPaths=${readOnly}`,
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'ProtectClock=yes',
    'ProtectHostname=yes',
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX',
    'RestrictNamespaces=yes',
    'RestrictRealtime=yes',
    'RestrictSUIDSGID=yes',
    'LockPersonality=yes',
    'SystemCallArchitectures=native',
    'UMask=0077',
    // Only the capability to bind a low port, and only when asked for one.
    `CapabilityBoundingSet=${lowPort ? 'CAP_NET_BIND_SERVICE' : ''}`,
    ...(lowPort && user ? ['AmbientCapabilities=CAP_NET_BIND_SERVICE'] : []),
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** The units that keep a server's copy of the site state current (its timer is what gets enabled). */
export const STATE_MIRROR_SERVICE = 'ferry-state-mirror.service';
export const STATE_MIRROR_TIMER = 'ferry-state-mirror.timer';

/** The command line of a unit that runs the installed ferry on the bundled runtime. */
function ferryExec(o: { node?: string; ferry?: string }, args: string[]): string {
  return [absolute(o.node ?? RUNTIME_NODE, 'the runtime'), ...QUIET_DEPRECATIONS, absolute(o.ferry ?? FERRY_MJS, 'ferry.mjs'), ...args].map(systemdArg).join(' ');
}

/** A timer unit of ferry's: what it does (its comment and description) and when. */
function timerUnit(description: string, comment: string, when: string[]): string {
  return [`# Written by ferry. ${comment}`, '[Unit]', `Description=ferry: ${description}`, '', '[Timer]', ...when, '', '[Install]', 'WantedBy=timers.target', ''].join('\n');
}

/**
 * `ferry state mirror` every 30 s, and soon after boot: a server that was off catches up with what
 * the others changed while it was, so its mirror is current when the API is next down.
 */
export function renderStateMirrorUnits(o: { node?: string; ferry?: string } = {}): { service: string; timer: string } {
  const exec = ferryExec(o, ['state', 'mirror']);
  const service = [
    "# Written by ferry. Copies the site state from the cluster to this server's mirror.",
    '[Unit]',
    "Description=ferry: copy the site state to this server's mirror",
    // Nothing to copy before kubeadm has made this a control-plane node.
    `ConditionPathExists=${ADMIN_CONF}`,
    '',
    '[Service]',
    'Type=oneshot',
    `ExecStart=${exec}`,
    'TimeoutStartSec=60s',
    ...FERRY_ROOT_ONLY,
    '',
  ].join('\n');
  const timer = timerUnit("keep this server's site state mirror current", "Keeps this server's site state mirror current.", ['OnBootSec=30s', 'OnUnitActiveSec=30s', 'AccuracySec=5s']);
  return { service, timer };
}

/** The units that renew a server's certificates before they expire (its timer is what gets enabled). */
export const CERTS_SERVICE = 'ferry-certs.service';
export const CERTS_TIMER = 'ferry-certs.timer';

/**
 * `ferry certs renew --local --under-days 90` daily and soon after boot (a site powered off for
 * months renews as it comes back): kubeadm's and the site service's certificates, renewed only when
 * one has under 90 days left; it logs to the journal and leaves an Event on the node.
 */
export function renderCertsUnits(o: { node?: string; ferry?: string; underDays?: number } = {}): { service: string; timer: string } {
  const exec = ferryExec(o, ['certs', 'renew', '--local', '--wait', '--under-days', String(o.underDays ?? 90)]);
  const service = [
    "# Written by ferry. Renews this server's certificates when one has under 90 days left.",
    '[Unit]',
    "Description=ferry: renew this server's certificates before they expire",
    `ConditionPathExists=${ADMIN_CONF}`,
    'After=kubelet.service',
    '',
    '[Service]',
    'Type=oneshot',
    `ExecStart=${exec}`,
    // kubeadm, crictl and a control plane's restart, then the API's wait.
    'TimeoutStartSec=30min',
    '',
  ].join('\n');
  const timer = timerUnit("check this server's certificates daily", "Checks this server's certificates daily.", ['OnBootSec=10min', 'OnCalendar=daily', 'RandomizedDelaySec=1h', 'Persistent=true']);
  return { service, timer };
}

/** The units that take this server's scheduled backup (its timer is what gets enabled). */
export const BACKUP_SERVICE = 'ferry-backup.service';
export const BACKUP_TIMER = 'ferry-backup.timer';
/** How many scheduled backups each server keeps (28: a week at one every 6 hours). */
export const BACKUP_KEEP = 28;

/**
 * `ferry backup save --local`, then `ferry backup prune --yes --keep N`, every 6 hours (the seed's
 * schedule) and once soon after boot when one was missed. Both need only this server's etcd member
 * and disk, not the API. The prune runs only after a save succeeded: a failing save never thins out
 * the good backups.
 */
export function renderBackupUnits(o: { node?: string; ferry?: string; keep?: number } = {}): { service: string; timer: string } {
  const keep = o.keep ?? BACKUP_KEEP;
  const service = [
    '# Written by ferry. Takes an encrypted backup of this server (etcd, PKI, site state), then keeps the newest.',
    '[Unit]',
    "Description=ferry: back up this server's etcd member, PKI and site state",
    // Nothing to back up before kubeadm has made this a control-plane node.
    `ConditionPathExists=${ADMIN_CONF}`,
    'After=kubelet.service',
    '',
    '[Service]',
    'Type=oneshot',
    `ExecStart=${ferryExec(o, ['backup', 'save', '--local'])}`,
    `ExecStart=${ferryExec(o, ['backup', 'prune', '--yes', '--keep', String(keep)])}`,
    'TimeoutStartSec=30min',
    'Nice=10',
    'IOSchedulingClass=idle',
    'UMask=0077',
    ...FERRY_ROOT_ONLY,
    '',
  ].join('\n');
  const timer = timerUnit('back up this server every 6 hours', 'Backs up this server every 6 hours.', ['OnBootSec=15min', 'OnCalendar=00/6:00', 'RandomizedDelaySec=10min', 'Persistent=true']);
  return { service, timer };
}
