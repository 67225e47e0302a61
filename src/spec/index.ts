export * from './spec.js';
export * from './lock.js';
export * from './schema.js';
