import { describe, expect, it } from 'vitest';
import {
  type Code,
  Codes,
  DriftError,
  type ErrorKind,
  ExitCode,
  type ExitCodeName,
  FerryError,
  HostError,
  IntegrityError,
  InternalError,
  kindOf,
  RegistryError,
  RemoteError,
  SpecError,
  StoreError,
  UsageError,
} from '../../src/errors.js';

type AnyClass = new (code: never, message: string) => FerryError;
const classes = {
  usage: UsageError,
  spec: SpecError,
  drift: DriftError,
  registry: RegistryError,
  remote: RemoteError,
  integrity: IntegrityError,
  store: StoreError,
  host: HostError,
  internal: InternalError,
} satisfies Record<ErrorKind, AnyClass>;

/** The contract scripts rely on: each code's exit. A change here is a change to that contract. */
const exits: Record<ExitCodeName, Code[]> = {
  ok: [],
  internal: ['INTERNAL'],
  usage: [
    'SPEC_PARSE', 'SPEC_INVALID', 'SPEC_READ', 'KUBERNETES_VERSION_UNSUPPORTED', 'LOCK_PARSE', 'LOCK_INVALID', 'REF_INVALID', 'USAGE',
    'DIGEST_INVALID', 'CREDS_INVALID', 'SOURCE_READ', 'CHECKSUM_MISSING', 'CHART_NOT_FOUND', 'CHART_INVALID', 'PLATFORM_UNSUPPORTED',
    'KEY_READ', 'KEY_EXISTS', 'KEY_PASSPHRASE', 'BUNDLE_READ', 'BUNDLE_PATH_CONFLICT', 'BUNDLE_IMAGE_MISSING', 'BUNDLE_BINARY_MISSING',
    'PROMPT_NO_TTY', 'INSTALL_MISSING', 'PREFLIGHT_FAILED', 'CGROUP_V1_REFUSED', 'SSH_IDENTITY_READ', 'SERVE_LISTEN', 'PKI_INVALID',
    'PKI_MISSING', 'MIRROR_INVALID', 'UNIT_INVALID', 'BOOTSTRAP_VALUES_INVALID', 'BUNDLE_DOWNGRADE', 'BUNDLE_SIGNER_CHANGED', 'UNPACK_TARGET_NOT_FERRY', 'SSH_KNOWN_HOSTS_READ',
    // issue 12 item 5
    'BUNDLE_NOT_FOUND', 'BUNDLE_PART_GIVEN', 'KEY_NOT_PUBLIC', 'STORE_NOT_FOUND', 'SERVE_BUNDLE_ARCHIVE',
    // issue 12 item 2
    'INSTALL_REFUSED',
    'OFFLINE_NOT_CACHED',
    // issue 18 (the contract on main, and branch state)
    'OPERATION_IN_PROGRESS', 'OPERATION_UNFINISHED', 'STATE_MISSING',
    // issue 18 (store)
    'STORE_FILE_CLASH', 'STORE_BUNDLE_CLASH', 'STORE_NOT_FERRY', 'STORE_BUNDLE_UNKNOWN', 'INSTALL_VERSION_MISMATCH',
    // issue 18, branch ops
    'NODE_PAYLOAD_INVALID',
    // issue 19, branch delta
    'BUNDLE_BASE_MISSING', 'BUNDLE_BASE_UNREADABLE', 'UPGRADE_NOT_NEWER', 'UPGRADE_SKIPS_MINOR', 'UPGRADE_KUBELET_SKEW',
    // issue 20, branch daytwo
    'RESET_QUORUM', 'RESET_UNKNOWN_NODE', 'RESET_NOT_FERRY',
    // issue 19: ferry upgrade
    'UPGRADE_PREFLIGHT',
    // issue 20, branch backup
    'BACKUP_KEY_MISSING', 'BACKUP_WRONG_KEY', 'BACKUP_FORMAT_UNSUPPORTED',
  ],
  drift: ['LOCK_MISSING_ENTRY', 'LOCK_DRIFT', 'PLATFORM_MISSING'],
  remote: [
    'REGISTRY_UNREACHABLE', 'REGISTRY_AUTH', 'REGISTRY_DENIED', 'REGISTRY_NOT_FOUND', 'REGISTRY_HTTP', 'REGISTRY_INSECURE', 'REGISTRY_PROTOCOL',
    'MEDIA_TYPE_UNSUPPORTED', 'DOWNLOAD_FAILED', 'RUNTIME_NOT_FOUND', 'SSH_HOST_KEY_MISMATCH', 'SSH_HOST_KEY_UNKNOWN', 'SSH_CONNECT',
    'JOIN_FAILED', 'KUBE_API', 'ROLLOUT_TIMEOUT', 'SSH_HOST_KEY_REVOKED', 'SSH_HOST_KEY_CERT_AUTHORITY', 'MANIFEST_GRAPH_TOO_LARGE', 'MANIFEST_TOO_LARGE',
    // issue 18 (the contract on main, and branch state)
    'STATE_CONFLICT', 'KUBE_UNREACHABLE',
    // issue 20, branch daytwo
    'CERTS_RENEW_FAILED', 'RESET_FAILED',
    // issue 19: ferry upgrade
    'UPGRADE_FAILED',
    // issue 20, branch backup
    'BACKUP_FAILED',
  ],
  integrity: [
    'DIGEST_MISMATCH', 'SIZE_MISMATCH', 'CHECKSUM_MISMATCH', 'RUNTIME_INVALID', 'BUNDLE_SIGNATURE_INVALID', 'BUNDLE_UNSIGNED', 'BUNDLE_UNTRUSTED',
    'BUNDLE_FORMAT', 'BUNDLE_CHECKSUM_MISMATCH', 'BUNDLE_ENTRY_UNLISTED', 'BUNDLE_ENTRY_DUPLICATE', 'BUNDLE_ENTRY_MISSING', 'BUNDLE_PATH_ABSOLUTE',
    'BUNDLE_PATH_TRAVERSAL', 'BUNDLE_LINK_ESCAPE', 'BUNDLE_LINK_UNSUPPORTED', 'BUNDLE_SPECIAL_FILE', 'BUNDLE_TRUNCATED', 'BUNDLE_PART_MISSING',
    'BUNDLE_PART_MISMATCH', 'BUNDLE_INPUT_MISMATCH', 'BUNDLE_ENTRY_CONFLICT',
    // issue 12 item 5
    'RUNTIME_ARCH_MISMATCH',
    // issue 18, branch state
    'STATE_INVALID',
    // issue 19, branch delta
    'BUNDLE_BASE_MISMATCH', 'UPGRADE_SIGNER',
    // issue 21, branch trust
    'FERRY_TREE_UNLISTED',
    // issue 19: ferry upgrade
    'ETCD_SNAPSHOT_DAMAGED',
    // issue 20, branch backup
    'BACKUP_NOT_FERRY', 'BACKUP_TRUNCATED', 'BACKUP_CORRUPT',
  ],
  io: [
    'STORE_IO', 'STORE_INVALID', 'STORE_MISSING_BLOB', 'BUNDLE_BUILD', 'INSTALL_STEP_FAILED', 'KERNEL_MODULE_MISSING', 'SYSCTL_NOT_SET',
    'JOIN_UPLOAD_MISSING', 'KUBECONFIG_READ', 'SERVE_SOCKET', 'SERVE_BUNDLE',
    // issue 12 item 5
    'HOST_COMMAND_MISSING',
    // issue 22, branch operator2
    'SUPPORT_BUNDLE_WRITE',
    // issue 20, branch backup
    'RESTORE_FAILED',
  ],
};

function construct(code: Code): FerryError {
  return new (classes[kindOf(code)] as new (code: Code, message: string) => FerryError)(code, 'm');
}

describe('the error table', () => {
  it('gives every code exactly one class, and that class one exit', () => {
    const codes = Object.values(Codes);
    expect(new Set(codes).size).toBe(codes.length);
    const exitsOfClass = new Map<AnyClass, Set<ExitCodeName>>();
    for (const code of codes) {
      expect(code).toMatch(/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/);
      const e = construct(code);
      const owners = Object.values(classes).filter((C) => e instanceof C);
      expect(owners, code).toEqual([classes[kindOf(code)]]);
      expect(e).toMatchObject({ code, name: owners[0]!.name });
      exitsOfClass.set(owners[0]!, (exitsOfClass.get(owners[0]!) ?? new Set()).add(e.exit));
    }
    for (const [C, seen] of exitsOfClass) expect([...seen], C.name).toHaveLength(1);
  });

  it('keeps each code on the exit scripts rely on', () => {
    const listed = Object.values(exits).flat();
    expect([...listed].sort()).toEqual(Object.values(Codes).sort());
    for (const [exit, codes] of Object.entries(exits)) for (const code of codes) expect([code, construct(code).exit]).toEqual([code, exit]);
    expect(ExitCode[construct(Codes.installStep).exit]).toBe(6);
  });

  it('lets a class take only its own codes, at compile time', () => {
    const wrong = () => [
      // @ts-expect-error a usage code is not an integrity code
      new IntegrityError(Codes.usage, 'm'),
      // @ts-expect-error INSTALL_STEP_FAILED belongs to HostError
      new UsageError(Codes.installStep, 'm'),
      // @ts-expect-error the base class is abstract: the code picks the class
      new FerryError(Codes.usage, 'm'),
      // @ts-expect-error the exit comes from the code, never from the caller
      new UsageError(Codes.usage, 'm', { exit: 'io' }),
    ];
    expect(wrong).toBeTypeOf('function');
  });
});

describe('withContext', () => {
  it('returns a new error of the same class, code, exit, hint, details and status, with the context before the message', () => {
    const original = new RegistryError(Codes.regAuth, 'the registry refused the credentials', { hint: 'Log in again.', status: 401, details: { registry: 'r.example' } });
    const e = original.withContext('step "pull" failed', 'unused fallback');
    expect(e).toBeInstanceOf(RegistryError);
    expect(e).not.toBe(original);
    expect(e).toMatchObject({ name: 'RegistryError', code: 'REGISTRY_AUTH', exit: 'remote', hint: 'Log in again.', status: 401, details: { registry: 'r.example' } });
    expect(e.message).toBe('step "pull" failed: the registry refused the credentials');
    expect(e.cause).toBe(original);
    expect(original.message).toBe('the registry refused the credentials');
  });

  it('takes the given hint only where the error has none', () => {
    const e = new IntegrityError(Codes.digestMismatch, 'bad blob').withContext('step "x" failed', 'See the log.');
    expect(e).toMatchObject({ code: 'DIGEST_MISMATCH', exit: 'integrity', hint: 'See the log.', message: 'step "x" failed: bad blob' });
    expect(new UsageError(Codes.usage, 'm').withContext('c').hint).toBeUndefined();
  });
});
