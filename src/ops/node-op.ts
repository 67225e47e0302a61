import { Ajv } from 'ajv';
import { Codes, UsageError } from '../errors.js';
import type { NodeJoinPayload } from '../install/node-join.js';
import type { NodeUpgradePayload } from '../install/node-upgrade.js';
import { schemaProblems } from '../spec/schema-errors.js';

/*
 * Node operations: what ferry runs on a node over SSH (`ferry node-join`, later node-upgrade,
 * node-reset), each told its orders as JSON on stdin (secrets never on a command line). The node
 * checks that JSON against the operation's schema before acting: a payload from another ferry
 * version, or a damaged one, is refused with NODE_PAYLOAD_INVALID, not half-understood.
 */

type Schema = Record<string, unknown>;

const str = { type: 'string', minLength: 1 };
const strs = { type: 'array', items: str };
const ipv4 = { type: 'string', pattern: '^\\d{1,3}(\\.\\d{1,3}){3}$' };
const obj = { type: 'object' };

/** The schema of `ferry node-join`'s payload: NodeJoinPayload, written once more for the remote check (the test checks they agree). */
export const NODE_JOIN_SCHEMA: Schema = {
  $id: 'ferry.dev/node-join-payload',
  type: 'object',
  additionalProperties: false,
  required: ['role', 'name', 'ip', 'domain', 'fqdn', 'serverIps', 'firstServerIp', 'registries', 'pauseImage', 'kubernetesVersion', 'join'],
  properties: {
    role: { enum: ['server', 'agent'] },
    name: str,
    ip: ipv4,
    domain: str,
    fqdn: str,
    serverIps: { type: 'array', items: ipv4, minItems: 1 },
    firstServerIp: ipv4,
    registries: strs,
    pauseImage: str,
    containerdVersion: str,
    kubernetesVersion: { type: 'string', pattern: '^v\\d+\\.\\d+\\.\\d+' },
    cgroupV1: { enum: ['allow', 'refuse'] },
    ignoreKubeadmPreflight: strs,
    serviceCidr: str,
    patches: {
      type: 'object',
      additionalProperties: false,
      properties: { kubelet: obj, joinConfiguration: obj },
    },
    join: {
      type: 'object',
      additionalProperties: false,
      required: ['token', 'caCertHash'],
      properties: { token: str, caCertHash: { type: 'string', pattern: '^sha256:[a-f0-9]{64}$' }, certificateKey: { type: 'string', pattern: '^[a-f0-9]{64}$' } },
    },
  },
};

/**
 * Parses and checks a node operation's payload. Problems name the field and never echo a value
 * (the payload carries the join token and certificate key).
 */
export function readPayload<T>(text: string, schema: Schema, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new UsageError(Codes.nodePayloadInvalid, `${what}: its payload on stdin is not JSON (${text.length ? (e as Error).message.replace(/ in JSON.*$/, '') : 'it is empty'})`, { hint: `${what} is started by another ferry over SSH; run that ferry again, with the same version as this node's.` });
  }
  const validate = new Ajv({ allErrors: true, verbose: false, strict: false }).compile(schema);
  if (!validate(value)) {
    const problems = schemaProblems(validate.errors ?? []).map((p) => `${p.where || '(payload)'} ${p.message}`);
    throw new UsageError(Codes.nodePayloadInvalid, `${what}: its payload does not match its schema:\n  ${problems.join('\n  ')}`, { hint: `The ferry that started ${what} and the one on this node disagree on its shape: ensure both are of the same bundle (ferry join uploads its own), then run it again.` });
  }
  return value as T;
}

export const readNodeJoinPayload = (text: string) => readPayload<NodeJoinPayload>(text, NODE_JOIN_SCHEMA, 'node-join');

const versionsEntry = {
  type: 'object',
  required: ['name', 'version', 'platform', 'path', 'sha256', 'size'],
  properties: { name: str, version: str, platform: str, path: str, sha256: { type: 'string', pattern: '^[a-f0-9]{64}$' }, size: { type: 'integer', minimum: 0 }, archive: { type: 'boolean' }, url: { type: 'string' } },
};

/** The schema of `ferry node-upgrade`'s payload: NodeUpgradePayload (the test checks they agree). */
export const NODE_UPGRADE_SCHEMA: Schema = {
  $id: 'ferry.dev/node-upgrade-payload',
  type: 'object',
  additionalProperties: false,
  required: ['phase', 'name', 'role', 'domain', 'serverIps', 'bundle', 'kubernetesVersion', 'files'],
  properties: {
    phase: { enum: ['stage', 'upgrade'] },
    name: str,
    role: { enum: ['server', 'agent'] },
    domain: str,
    serverIps: { type: 'array', items: ipv4, minItems: 1 },
    bundle: str,
    kubernetesVersion: { type: 'string', pattern: '^v\\d+\\.\\d+\\.\\d+' },
    apply: { type: 'boolean' },
    files: { type: 'array', items: versionsEntry },
    ignoreKubeadmPreflight: strs,
  },
};

export const readNodeUpgradePayload = (text: string) => readPayload<NodeUpgradePayload>(text, NODE_UPGRADE_SCHEMA, 'node-upgrade');
