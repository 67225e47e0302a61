export * from './containerd.js';
export * from './units.js';
