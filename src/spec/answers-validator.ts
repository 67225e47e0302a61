import { Ajv, type ValidateFunction } from 'ajv';
import { answersSchema } from './answers.js';
import { SPEC_AJV_OPTIONS } from './spec-validator.js';

/**
 * The answers validator, compiled by Ajv from the schema with the spec's options. As with the
 * spec's, the bundled ferry carries Ajv's standalone code of it instead (scripts/build-mjs.mjs).
 */
export function answersValidator(): ValidateFunction {
  return new Ajv(SPEC_AJV_OPTIONS).compile(answersSchema);
}
