export * from './reference.js';
export * from './media.js';
export * from './auth.js';
export * from './client.js';
export * from './layout.js';
export * from './copy.js';
