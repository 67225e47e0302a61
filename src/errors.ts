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

export interface FerryErrorOptions {
  hint?: string;
  cause?: unknown;
  exit?: ExitCodeName;
  details?: Record<string, unknown>;
}

export class FerryError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  readonly exit: ExitCodeName;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, opts: FerryErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = opts.hint;
    this.exit = opts.exit ?? 'internal';
    this.details = opts.details;
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

export class UsageError extends FerryError {
  constructor(code: string, message: string, opts: Omit<FerryErrorOptions, 'exit'> = {}) {
    super(code, message, { ...opts, exit: 'usage' });
  }
}

export class SpecError extends FerryError {
  constructor(code: string, message: string, opts: Omit<FerryErrorOptions, 'exit'> = {}) {
    super(code, message, { ...opts, exit: 'usage' });
  }
}

export class DriftError extends FerryError {
  constructor(code: string, message: string, opts: Omit<FerryErrorOptions, 'exit'> = {}) {
    super(code, message, { ...opts, exit: 'drift' });
  }
}

export class RegistryError extends FerryError {
  readonly status: number | undefined;
  constructor(
    code: string,
    message: string,
    opts: Omit<FerryErrorOptions, 'exit'> & { status?: number } = {},
  ) {
    super(code, message, { ...opts, exit: 'remote' });
    this.status = opts.status;
  }
}

export class IntegrityError extends FerryError {
  constructor(code: string, message: string, opts: Omit<FerryErrorOptions, 'exit'> = {}) {
    super(code, message, { ...opts, exit: 'integrity' });
  }
}

export class StoreError extends FerryError {
  constructor(code: string, message: string, opts: Omit<FerryErrorOptions, 'exit'> = {}) {
    super(code, message, { ...opts, exit: 'io' });
  }
}

export function isFerryError(e: unknown): e is FerryError {
  return e instanceof FerryError;
}

/** Error codes in one place, so docs and tests can list them. */
export const Codes = {
  specParse: 'SPEC_PARSE',
  specInvalid: 'SPEC_INVALID',
  specRead: 'SPEC_READ',
  kubernetesUnsupported: 'KUBERNETES_VERSION_UNSUPPORTED',
  lockParse: 'LOCK_PARSE',
  lockInvalid: 'LOCK_INVALID',
  lockMissing: 'LOCK_MISSING_ENTRY',
  lockDrift: 'LOCK_DRIFT',
  refInvalid: 'REF_INVALID',
  usage: 'USAGE',
  regUnreachable: 'REGISTRY_UNREACHABLE',
  regAuth: 'REGISTRY_AUTH',
  regDenied: 'REGISTRY_DENIED',
  regNotFound: 'REGISTRY_NOT_FOUND',
  regHttp: 'REGISTRY_HTTP',
  regInsecure: 'REGISTRY_INSECURE',
  regProtocol: 'REGISTRY_PROTOCOL',
  platformMissing: 'PLATFORM_MISSING',
  digestMismatch: 'DIGEST_MISMATCH',
  sizeMismatch: 'SIZE_MISMATCH',
  digestInvalid: 'DIGEST_INVALID',
  mediaType: 'MEDIA_TYPE_UNSUPPORTED',
  storeIo: 'STORE_IO',
  storeInvalid: 'STORE_INVALID',
  storeMissing: 'STORE_MISSING_BLOB',
  credsInvalid: 'CREDS_INVALID',
  internal: 'INTERNAL',
  // Fetching binaries, charts and the runtime.
  downloadFailed: 'DOWNLOAD_FAILED',
  checksumMismatch: 'CHECKSUM_MISMATCH',
  checksumMissing: 'CHECKSUM_MISSING',
  chartNotFound: 'CHART_NOT_FOUND',
  chartInvalid: 'CHART_INVALID',
  runtimeNotFound: 'RUNTIME_NOT_FOUND',
  // Keys and signatures.
  keyRead: 'KEY_READ',
  keyExists: 'KEY_EXISTS',
  passphrase: 'KEY_PASSPHRASE',
  // The bundle archive: each refusal has its own code.
  bundleSignature: 'BUNDLE_SIGNATURE_INVALID',
  bundleUnsigned: 'BUNDLE_UNSIGNED',
  bundleUntrusted: 'BUNDLE_UNTRUSTED',
  bundleFormat: 'BUNDLE_FORMAT',
  bundleChecksum: 'BUNDLE_CHECKSUM_MISMATCH',
  bundleUnlisted: 'BUNDLE_ENTRY_UNLISTED',
  bundleDuplicate: 'BUNDLE_ENTRY_DUPLICATE',
  bundleMissingEntry: 'BUNDLE_ENTRY_MISSING',
  bundleAbsolute: 'BUNDLE_PATH_ABSOLUTE',
  bundleTraversal: 'BUNDLE_PATH_TRAVERSAL',
  bundleLink: 'BUNDLE_LINK_ESCAPE',
  bundleLinkUnsupported: 'BUNDLE_LINK_UNSUPPORTED',
  bundleSpecial: 'BUNDLE_SPECIAL_FILE',
  bundleTruncated: 'BUNDLE_TRUNCATED',
  bundlePartMissing: 'BUNDLE_PART_MISSING',
  bundlePartMismatch: 'BUNDLE_PART_MISMATCH',
  bundleBuild: 'BUNDLE_BUILD',
  bundleImageMissing: 'BUNDLE_IMAGE_MISSING',
  promptNoTty: 'PROMPT_NO_TTY',
  // Install and join.
  installStep: 'INSTALL_STEP_FAILED',
  preflight: 'PREFLIGHT_FAILED',
  cgroupV1Refused: 'CGROUP_V1_REFUSED',
  kernelModule: 'KERNEL_MODULE_MISSING',
  sysctl: 'SYSCTL_NOT_SET',
  sshHostKey: 'SSH_HOST_KEY_MISMATCH',
  sshHostUnknown: 'SSH_HOST_KEY_UNKNOWN',
  sshConnect: 'SSH_CONNECT',
  joinFailed: 'JOIN_FAILED',
  kubeApi: 'KUBE_API',
  rolloutTimeout: 'ROLLOUT_TIMEOUT',
  // The site service, its PKI and the node configuration it needs.
  serveListen: 'SERVE_LISTEN',
  serveBundle: 'SERVE_BUNDLE',
  pkiInvalid: 'PKI_INVALID',
  pkiMissing: 'PKI_MISSING',
  mirrorInvalid: 'MIRROR_INVALID',
  unitInvalid: 'UNIT_INVALID',
  // The bootstrap chart's values (site DNS and API load balancer).
  bootstrapValues: 'BOOTSTRAP_VALUES_INVALID',
  // Issue 10, items 5, 7 and 14: what the build packs is hashed as it is written; hostile graphs;
  // entries that cannot all be files; manifests over the client's limit.
  bundleInputMismatch: 'BUNDLE_INPUT_MISMATCH',
  manifestGraphTooLarge: 'MANIFEST_GRAPH_TOO_LARGE',
  bundlePathConflict: 'BUNDLE_PATH_CONFLICT',
  manifestTooLarge: 'MANIFEST_TOO_LARGE',
} as const;
