export * from './keys.js';
export * from './pki.js';
