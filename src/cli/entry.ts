// The entry of the single-file ferry (dist/ferry.mjs) that bundles carry.
import { main } from './main.js';

process.exitCode = await main(process.argv.slice(2));
