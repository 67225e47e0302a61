import { Ajv, type ValidateFunction } from 'ajv';
import { bundleSpecSchema } from './schema.js';

/** Every error, each with the schema that failed (its description says what was expected). */
export const SPEC_AJV_OPTIONS = { allErrors: true, verbose: true, strict: false };

/**
 * The spec validator, compiled by Ajv from the schema. The bundled ferry never runs this:
 * scripts/build-mjs.mjs swaps this module for Ajv's standalone code of the same schema and
 * options, generated at build time, so a start pays neither Ajv's load nor its compile (~90 ms).
 */
export function specValidator(): ValidateFunction {
  return new Ajv(SPEC_AJV_OPTIONS).compile(bundleSpecSchema);
}
