/**
 * Site-specific settings from the answers, in the spirit of kubeadm's --patches: each target is a
 * JSON merge patch (RFC 7386, kubeadm's "+merge") over the document ferry renders, so the operator's
 * value wins, objects merge key by key, arrays and scalars replace, and null removes a key.
 */
export const PATCH_TARGETS = ['kubelet', 'kubeProxy', 'clusterConfiguration', 'initConfiguration', 'joinConfiguration'] as const;
export type PatchTarget = (typeof PATCH_TARGETS)[number];
export type Patch = Record<string, unknown>;
export type Patches = Partial<Record<PatchTarget, Patch>>;

const isMapping = (v: unknown): v is Patch => typeof v === 'object' && v !== null && !Array.isArray(v);

function merge(target: unknown, patch: unknown, dropNulls: boolean): unknown {
  if (!isMapping(patch)) return patch;
  const out: Patch = isMapping(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null && dropNulls) delete out[k];
    else out[k] = v === null ? null : merge(out[k], v, dropNulls);
  }
  return out;
}

/** A document with a merge patch applied (no patch: the document). */
export function mergePatch<T extends Patch>(doc: T, patch: Patch | undefined): T {
  return patch ? (merge(doc, patch, true) as T) : doc;
}

/** Two merge patches as one, `b` after `a`: its nulls stay, to remove keys from what the result patches. */
export function combinePatches(a: Patch, b: Patch | undefined): Patch {
  return b ? (merge(a, b, false) as Patch) : a;
}

/** Every problem with the answers' patches, each with its path under `patches`. */
export function patchProblems(patches: unknown): { path: (string | number)[]; msg: string }[] {
  if (patches === undefined) return [];
  if (!isMapping(patches)) return [{ path: ['patches'], msg: `must be a mapping of ${PATCH_TARGETS.join(', ')}` }];
  const out: { path: (string | number)[]; msg: string }[] = [];
  for (const [k, v] of Object.entries(patches)) {
    if (!(PATCH_TARGETS as readonly string[]).includes(k)) out.push({ path: ['patches', k], msg: `is not a patch target: use ${PATCH_TARGETS.join(', ')}` });
    else if (!isMapping(v)) out.push({ path: ['patches', k], msg: 'must be a mapping (merged into the document ferry writes)' });
    else for (const f of ['apiVersion', 'kind']) if (f in v) out.push({ path: ['patches', k, f], msg: 'cannot be patched: ferry writes the document of that kind' });
  }
  return out;
}
