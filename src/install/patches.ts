/**
 * Site-specific settings from the answers, in the spirit of kubeadm's --patches: each target is a
 * JSON merge patch (RFC 7386, kubeadm's "+merge") over the document ferry renders, so the operator's
 * value wins, objects merge key by key, arrays and scalars replace, and null removes a key.
 */
import type { Patch } from '../spec/answers.js';

export { PATCH_TARGETS, type Patch, type Patches, type PatchTarget } from '../spec/answers.js';

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
