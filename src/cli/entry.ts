// The entry of the single-file ferry (dist/ferry.mjs) that bundles carry.
import { main } from './main.js';

// A reader that stops early (ferry … | head) is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
});

process.exitCode = await main(process.argv.slice(2));
