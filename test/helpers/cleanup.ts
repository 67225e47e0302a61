import { promises as fs } from 'node:fs';
import { afterAll } from 'vitest';
import { madeDirs } from '../../fixtures/peers.js';

// Each test file's temporary directories go with it: runs left thousands behind, 19 GB on a shared
// disk whose free share the site's kubelets then saw. FERRY_KEEP_TMP=1 keeps them for a look.
afterAll(async () => {
  if (process.env.FERRY_KEEP_TMP) return;
  await Promise.all([...madeDirs].map((d) => fs.rm(d, { recursive: true, force: true }).catch(() => {})));
  madeDirs.clear();
});
