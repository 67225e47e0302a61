/**
 * Every failure ferry reports is a FerryError: a stable code for scripts, a message that says what
 * was wrong, and a hint that says what to do next. The CLI boundary is the only place that prints
 * them and picks an exit code.
 */
export const ExitCode = {
  ok: 0,
  /** Unexpected internal failure (a bug). */
  internal: 1,
  /** Bad command line or input file (spec, lock, answers). */
  usage: 2,
  /** The lock does not match the spec or upstream (`ferry lock --check`, pulls). */
  drift: 3,
  /** A registry, network or auth failure. */
  remote: 4,
  /** Content failed an integrity check (digest, size, signature). */
  integrity: 5,
  /** Local filesystem failure (permissions, disk full). */
  io: 6,
} as const;
export type ExitCodeName = keyof typeof ExitCode;

/** Each kind of error is one class, and every error of a kind exits the same way. */
const kindExit = {
  /** UsageError: the command line, or an input it names (keys, charts, checksums, the host's fitness). */
  usage: 'usage',
  /** SpecError: a spec, lock or answers file that does not parse or validate. */
  spec: 'usage',
  /** DriftError: the lock no longer matches the spec or upstream. */
  drift: 'drift',
  /** RegistryError: an OCI or npm registry, or a download. */
  registry: 'remote',
  /** RemoteError: another machine: SSH, the Kubernetes API, a joining node. */
  remote: 'remote',
  /** IntegrityError: content that failed a check (digest, size, signature, bundle shape). */
  integrity: 'integrity',
  /** StoreError: the OCI store on disk. */
  store: 'io',
  /** HostError: this machine: its files, commands and kernel. */
  host: 'io',
  /** InternalError: a bug in ferry. */
  internal: 'internal',
} as const satisfies Record<string, ExitCodeName>;
export type ErrorKind = keyof typeof kindExit;

/**
 * Every code with the one kind (so class and exit) that carries it. Codes are a contract for scripts:
 * a new cause gets a new code; a code's string and meaning stay.
 */
const table = {
  specParse: ['SPEC_PARSE', 'spec'],
  specInvalid: ['SPEC_INVALID', 'spec'],
  specRead: ['SPEC_READ', 'spec'],
  kubernetesUnsupported: ['KUBERNETES_VERSION_UNSUPPORTED', 'spec'],
  lockParse: ['LOCK_PARSE', 'spec'],
  lockInvalid: ['LOCK_INVALID', 'spec'],
  lockMissing: ['LOCK_MISSING_ENTRY', 'drift'],
  lockDrift: ['LOCK_DRIFT', 'drift'],
  refInvalid: ['REF_INVALID', 'usage'],
  usage: ['USAGE', 'usage'],
  regUnreachable: ['REGISTRY_UNREACHABLE', 'registry'],
  regAuth: ['REGISTRY_AUTH', 'registry'],
  regDenied: ['REGISTRY_DENIED', 'registry'],
  regNotFound: ['REGISTRY_NOT_FOUND', 'registry'],
  regHttp: ['REGISTRY_HTTP', 'registry'],
  regInsecure: ['REGISTRY_INSECURE', 'registry'],
  regProtocol: ['REGISTRY_PROTOCOL', 'registry'],
  platformMissing: ['PLATFORM_MISSING', 'drift'],
  digestMismatch: ['DIGEST_MISMATCH', 'integrity'],
  sizeMismatch: ['SIZE_MISMATCH', 'integrity'],
  digestInvalid: ['DIGEST_INVALID', 'usage'],
  mediaType: ['MEDIA_TYPE_UNSUPPORTED', 'registry'],
  storeIo: ['STORE_IO', 'store'],
  storeInvalid: ['STORE_INVALID', 'store'],
  storeMissing: ['STORE_MISSING_BLOB', 'store'],
  credsInvalid: ['CREDS_INVALID', 'usage'],
  internal: ['INTERNAL', 'internal'],
  // Fetching binaries, charts and the runtime.
  downloadFailed: ['DOWNLOAD_FAILED', 'registry'],
  /** A local path or URL scheme in the spec that ferry cannot read. */
  sourceRead: ['SOURCE_READ', 'usage'],
  checksumMismatch: ['CHECKSUM_MISMATCH', 'integrity'],
  /** Nothing to check a download against: the fix is in the spec (a sha256, a checksumUrl, another repo). */
  checksumMissing: ['CHECKSUM_MISSING', 'usage'],
  chartNotFound: ['CHART_NOT_FOUND', 'usage'],
  chartInvalid: ['CHART_INVALID', 'usage'],
  runtimeNotFound: ['RUNTIME_NOT_FOUND', 'registry'],
  /** A runtime package that holds no Node.js binary. */
  runtimeInvalid: ['RUNTIME_INVALID', 'integrity'],
  /** A platform ferry has no Node.js runtime for. */
  platformUnsupported: ['PLATFORM_UNSUPPORTED', 'usage'],
  // Keys and signatures.
  keyRead: ['KEY_READ', 'usage'],
  keyExists: ['KEY_EXISTS', 'usage'],
  passphrase: ['KEY_PASSPHRASE', 'usage'],
  // The bundle archive: each refusal has its own code.
  bundleSignature: ['BUNDLE_SIGNATURE_INVALID', 'integrity'],
  bundleUnsigned: ['BUNDLE_UNSIGNED', 'integrity'],
  bundleUntrusted: ['BUNDLE_UNTRUSTED', 'integrity'],
  bundleFormat: ['BUNDLE_FORMAT', 'integrity'],
  /** The bundle file named on the command line cannot be read. */
  bundleRead: ['BUNDLE_READ', 'usage'],
  bundleChecksum: ['BUNDLE_CHECKSUM_MISMATCH', 'integrity'],
  bundleUnlisted: ['BUNDLE_ENTRY_UNLISTED', 'integrity'],
  bundleDuplicate: ['BUNDLE_ENTRY_DUPLICATE', 'integrity'],
  bundleMissingEntry: ['BUNDLE_ENTRY_MISSING', 'integrity'],
  bundleAbsolute: ['BUNDLE_PATH_ABSOLUTE', 'integrity'],
  bundleTraversal: ['BUNDLE_PATH_TRAVERSAL', 'integrity'],
  bundleLink: ['BUNDLE_LINK_ESCAPE', 'integrity'],
  bundleLinkUnsupported: ['BUNDLE_LINK_UNSUPPORTED', 'integrity'],
  bundleSpecial: ['BUNDLE_SPECIAL_FILE', 'integrity'],
  bundleTruncated: ['BUNDLE_TRUNCATED', 'integrity'],
  bundlePartMissing: ['BUNDLE_PART_MISSING', 'integrity'],
  bundlePartMismatch: ['BUNDLE_PART_MISMATCH', 'integrity'],
  bundleBuild: ['BUNDLE_BUILD', 'host'],
  /** The spec would put two entries at one path in the bundle. */
  bundlePathConflict: ['BUNDLE_PATH_CONFLICT', 'usage'],
  bundleImageMissing: ['BUNDLE_IMAGE_MISSING', 'usage'],
  /** The bundle lacks a binary the site needs (helm). */
  bundleBinaryMissing: ['BUNDLE_BINARY_MISSING', 'usage'],
  promptNoTty: ['PROMPT_NO_TTY', 'usage'],
  // Install and join.
  /** A step, or a command it ran, failed on this machine; a FerryError from a step keeps its own code. */
  installStep: ['INSTALL_STEP_FAILED', 'host'],
  /** This machine is not a server where ferry install finished. */
  installMissing: ['INSTALL_MISSING', 'usage'],
  preflight: ['PREFLIGHT_FAILED', 'usage'],
  cgroupV1Refused: ['CGROUP_V1_REFUSED', 'usage'],
  kernelModule: ['KERNEL_MODULE_MISSING', 'host'],
  sysctl: ['SYSCTL_NOT_SET', 'host'],
  sshHostKey: ['SSH_HOST_KEY_MISMATCH', 'remote'],
  sshHostUnknown: ['SSH_HOST_KEY_UNKNOWN', 'remote'],
  sshConnect: ['SSH_CONNECT', 'remote'],
  /** The SSH private key the answers name cannot be read. */
  sshIdentityRead: ['SSH_IDENTITY_READ', 'usage'],
  joinFailed: ['JOIN_FAILED', 'remote'],
  /** A joining node lacks a file ferry join uploads (site CA, bundle). */
  joinUploadMissing: ['JOIN_UPLOAD_MISSING', 'host'],
  kubeApi: ['KUBE_API', 'remote'],
  kubeconfigRead: ['KUBECONFIG_READ', 'host'],
  rolloutTimeout: ['ROLLOUT_TIMEOUT', 'remote'],
  // The site service, its PKI and the node configuration it needs.
  /** A --listen address that is malformed, taken, privileged or not this host's. */
  serveListen: ['SERVE_LISTEN', 'usage'],
  /** Any other failure to open the listening socket. */
  serveSocket: ['SERVE_SOCKET', 'host'],
  // Issue 10 items 4 and 10: unpack refuses a rollback and a directory that is not ferry's.
  bundleDowngrade: ['BUNDLE_DOWNGRADE', 'usage'],
  unpackNotOurs: ['UNPACK_TARGET_NOT_FERRY', 'usage'],
  // Issue 10, items 5, 7 and 14: what the build packs is hashed as it is written; hostile graphs;
  // manifests over the client's limit.
  bundleInputMismatch: ['BUNDLE_INPUT_MISMATCH', 'integrity'],
  manifestGraphTooLarge: ['MANIFEST_GRAPH_TOO_LARGE', 'registry'],
  manifestTooLarge: ['MANIFEST_TOO_LARGE', 'registry'],
  /** A hostile bundle: one entry would be a file and a directory (build's own clash is BUNDLE_PATH_CONFLICT). */
  bundleEntryConflict: ['BUNDLE_ENTRY_CONFLICT', 'integrity'],
  // Issue 10 item 2: SSH host keys.
  sshHostKeyRevoked: ['SSH_HOST_KEY_REVOKED', 'remote'],
  sshHostCertAuthority: ['SSH_HOST_KEY_CERT_AUTHORITY', 'remote'],
  sshKnownHostsRead: ['SSH_KNOWN_HOSTS_READ', 'usage'],
  serveBundle: ['SERVE_BUNDLE', 'store'],
  pkiInvalid: ['PKI_INVALID', 'usage'],
  pkiMissing: ['PKI_MISSING', 'usage'],
  mirrorInvalid: ['MIRROR_INVALID', 'usage'],
  unitInvalid: ['UNIT_INVALID', 'usage'],
  // The bootstrap chart's values (site DNS and API load balancer).
  bootstrapValues: ['BOOTSTRAP_VALUES_INVALID', 'usage'],
  // Issue 12 item 5: the mistakes operators make, each with its own code.
  /** The bundle path (file or parts manifest) named on the command line does not exist. */
  bundleNotFound: ['BUNDLE_NOT_FOUND', 'usage'],
  /** One part (`FILE.part001`) was named where the parts manifest belongs. */
  bundlePartGiven: ['BUNDLE_PART_GIVEN', 'usage'],
  /** A private key where a public one belongs (`--trust`). */
  keyNotPublic: ['KEY_NOT_PUBLIC', 'usage'],
  /** A store directory to read from that does not exist or is not an OCI layout. */
  storeNotFound: ['STORE_NOT_FOUND', 'usage'],
  /** `serve --bundle` given the bundle archive instead of its unpacked directory. */
  serveBundleArchive: ['SERVE_BUNDLE_ARCHIVE', 'usage'],
  /** A command ferry needs on this host is not installed. */
  hostCommandMissing: ['HOST_COMMAND_MISSING', 'host'],
  /** A runtime that is not an ELF executable for the architecture it is labelled with. */
  runtimeArch: ['RUNTIME_ARCH_MISMATCH', 'integrity'],
  // issue 12 item 2: a dry run that finds more than one reason a real run would stop.
  installRefused: ['INSTALL_REFUSED', 'usage'],
  /** `--offline`, and the cache lacks something the build needs. */
  offlineNotCached: ['OFFLINE_NOT_CACHED', 'usage'],
  // Issue 18: the site state and its operations.
  /** Another multi-node operation holds the site's lease. */
  operationInProgress: ['OPERATION_IN_PROGRESS', 'usage'],
  /** An unfinished operation of another kind is recorded for the site. */
  operationUnfinished: ['OPERATION_UNFINISHED', 'usage'],
  /** The state changed under a compare-and-swap write: re-read and retry. */
  stateConflict: ['STATE_CONFLICT', 'remote'],
  // Branch state (issue 18): the cluster state's stores.
  /** The Kubernetes API did not answer (refused, unreachable, timed out). */
  kubeUnreachable: ['KUBE_UNREACHABLE', 'remote'],
  /** The site state document (ConfigMap or mirror) is not a SiteState ferry can read. */
  stateInvalid: ['STATE_INVALID', 'integrity'],
  /** There is no site state (neither in the cluster nor mirrored here). */
  stateMissing: ['STATE_MISSING', 'usage'],
  // Issue 18 (branch store): the site store of several bundles, and the install guard.
  /** Two bundles carry the same files/ path with different content. */
  storeFileClash: ['STORE_FILE_CLASH', 'usage'],
  /** A bundle id already in the store with other content. */
  storeBundleClash: ['STORE_BUNDLE_CLASH', 'usage'],
  /** A store directory ferry did not make (no .ferry-store marker). */
  storeNotOurs: ['STORE_NOT_FERRY', 'usage'],
  /** A bundle id the store does not hold (prune --keep, current). */
  storeBundleUnknown: ['STORE_BUNDLE_UNKNOWN', 'usage'],
  /** ferry install on an initialised node with a bundle of another Kubernetes version. */
  installVersionMismatch: ['INSTALL_VERSION_MISMATCH', 'usage'],
  // Issue 18, branch ops: the operation layer.
  /** A node operation's payload (stdin, from another ferry) does not match its schema. */
  nodePayloadInvalid: ['NODE_PAYLOAD_INVALID', 'usage'],
  // Issue 19 (branch delta): delta bundles and the upgrade's refusals.
  /** A delta bundle offered where its base (by checksums.txt digest) is not held. */
  bundleBaseMissing: ['BUNDLE_BASE_MISSING', 'usage'],
  /** A delta's base.json contradicts the base it names (an entry taken from it with another checksum). */
  bundleBaseMismatch: ['BUNDLE_BASE_MISMATCH', 'integrity'],
  /** build --since: the base's signed table cannot be read or was signed by another key. */
  bundleBaseUnreadable: ['BUNDLE_BASE_UNREADABLE', 'usage'],
  /** An upgrade to a bundle that is not newer than the site's, or to an older Kubernetes. */
  upgradeNotNewer: ['UPGRADE_NOT_NEWER', 'usage'],
  /** An upgrade that would skip a Kubernetes minor version on some node. */
  upgradeSkipsMinor: ['UPGRADE_SKIPS_MINOR', 'usage'],
  /** An upgrade after which (or during which) a kubelet would be newer than an API server. */
  upgradeKubeletSkew: ['UPGRADE_KUBELET_SKEW', 'usage'],
  /** An upgrade bundle signed by another key than the site's. */
  upgradeSigner: ['UPGRADE_SIGNER', 'integrity'],
  // Issue 21, branch trust: nothing unlisted runs; rollback and ownership checks that fail closed.
  /** A file under ferry/ or runtime/ that the bundle does not list (install.sh and the bundled ferry's guard print it). */
  ferryTreeUnlisted: ['FERRY_TREE_UNLISTED', 'integrity'],
  /** The incoming bundle is signed by another key than the installed one (without --allow-signer-change). */
  bundleSignerChanged: ['BUNDLE_SIGNER_CHANGED', 'usage'],
  // Issue 20, branch daytwo: status, certificates, reset.
  /** A server's certificate renewal failed (kubeadm, a control-plane restart, the site service). */
  certsRenewFailed: ['CERTS_RENEW_FAILED', 'remote'],
  /** ferry reset of a server would leave etcd without quorum (without --force). */
  resetQuorum: ['RESET_QUORUM', 'usage'],
  /** ferry reset names a node the site does not know. */
  resetUnknownNode: ['RESET_UNKNOWN_NODE', 'usage'],
  /** A node's cleanup (node-reset) or a cluster step of ferry reset failed. */
  resetFailed: ['RESET_FAILED', 'remote'],
  /** ferry reset --local on a machine without ferry's markers: nothing there is provably ferry's. */
  resetNotOurs: ['RESET_NOT_FERRY', 'usage'],
  // Issue 19: ferry upgrade.
  /** A site-wide check before an upgrade failed (a node not Ready or unreachable, etcd, disk, an image the new release needs). */
  upgradePreflight: ['UPGRADE_PREFLIGHT', 'usage'],
  /** A step of the rollout failed (a drain, kubeadm on a node, a node not Ready in time). */
  upgradeFailed: ['UPGRADE_FAILED', 'remote'],
  /** The pre-upgrade etcd snapshot is damaged (its trailing sha256 does not match). */
  snapshotDamaged: ['ETCD_SNAPSHOT_DAMAGED', 'integrity'],
  // Issue 22, branch operator2
  /** ferry support-bundle could not write its archive (--out not writable, disk full). */
  supportBundleWrite: ['SUPPORT_BUNDLE_WRITE', 'host'],
  // Issue 20, branch backup: encrypted etcd backups, their retention and the restore core.
  /** This server has no backup key (/etc/ferry/backup.key), or it is not 32 bytes. */
  backupKeyMissing: ['BACKUP_KEY_MISSING', 'usage'],
  /** The backup was sealed with another key than the one given (its header names the key's id). */
  backupWrongKey: ['BACKUP_WRONG_KEY', 'usage'],
  /** A file that is not a ferry backup (no magic, or a header that does not parse). */
  backupNotOurs: ['BACKUP_NOT_FERRY', 'integrity'],
  /** A backup of a format version this ferry does not read. */
  backupFormat: ['BACKUP_FORMAT_UNSUPPORTED', 'usage'],
  /** A backup cut short before its last frame. */
  backupTruncated: ['BACKUP_TRUNCATED', 'integrity'],
  /** A backup whose frame fails its tag, whose contents do not match its manifest, or whose snapshot does not match etcd's own sha256. */
  backupCorrupt: ['BACKUP_CORRUPT', 'integrity'],
  /** Taking a backup failed: etcd did not answer or broke off the snapshot. */
  backupFailed: ['BACKUP_FAILED', 'remote'],
  /** Restoring a backup's snapshot into a data directory failed (etcdutl missing or refusing). */
  restoreFailed: ['RESTORE_FAILED', 'host'],
} as const satisfies Record<string, readonly [string, ErrorKind]>;
type Table = typeof table;

/** Error codes in one place, so docs and tests can list them. */
export const Codes = Object.fromEntries(Object.entries(table).map(([k, [code]]) => [k, code])) as { readonly [K in keyof Table]: Table[K][0] };
export type Code = Table[keyof Table][0];
/** The codes of one kind: what that kind's class accepts. */
export type CodeOf<K extends ErrorKind> = { [P in keyof Table]: Table[P][1] extends K ? Table[P][0] : never }[keyof Table];

const kinds: ReadonlyMap<string, ErrorKind> = new Map(Object.values(table));

export function kindOf(code: Code): ErrorKind {
  return kinds.get(code)!;
}

export interface FerryErrorOptions {
  hint?: string;
  cause?: unknown;
  details?: Record<string, unknown>;
}

/** The base of the classes below; construct one of them, so the code decides the class and the exit. */
export abstract class FerryError<C extends Code = Code> extends Error {
  readonly code: C;
  readonly hint: string | undefined;
  readonly exit: ExitCodeName;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: C, message: string, opts: FerryErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = opts.hint;
    this.exit = kindExit[kindOf(code)];
    this.details = opts.details;
  }

  /**
   * A new error of the same class, code, exit and details with `context: ` before the message, and
   * `hint` only where this one has none. A copy, not a change: one error may reach several callers.
   */
  withContext(context: string, hint?: string): this {
    const Same = this.constructor as new (code: C, message: string, opts: FerryErrorOptions) => this;
    // Own fields are named as the options, so a subclass's own (RegistryError.status) carry over.
    return new Same(this.code, `${context}: ${this.message}`, { ...this, hint: this.hint ?? hint, cause: this });
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint ? { hint: this.hint } : {}),
      ...(this.details ? { details: this.details } : {}),
    };
  }
}

export class UsageError extends FerryError<CodeOf<'usage'>> {}

export class SpecError extends FerryError<CodeOf<'spec'>> {}

export class DriftError extends FerryError<CodeOf<'drift'>> {}

export class RegistryError extends FerryError<CodeOf<'registry'>> {
  readonly status: number | undefined;
  constructor(code: CodeOf<'registry'>, message: string, opts: FerryErrorOptions & { status?: number } = {}) {
    super(code, message, opts);
    this.status = opts.status;
  }
}

export class RemoteError extends FerryError<CodeOf<'remote'>> {}

export class IntegrityError extends FerryError<CodeOf<'integrity'>> {}

export class StoreError extends FerryError<CodeOf<'store'>> {}

export class HostError extends FerryError<CodeOf<'host'>> {}

export class InternalError extends FerryError<CodeOf<'internal'>> {}

export function isFerryError(e: unknown): e is FerryError {
  return e instanceof FerryError;
}
