export * from './images.js';
export * from './build.js';
export * from './verify.js';
export * from './unpack.js';
export * from './inspect.js';
