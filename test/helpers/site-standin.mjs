// STAND-IN for the fast suite, loaded by `ferry join --site-standin`: the site state kept in one
// JSON file (FERRY_SITE_STANDIN_FILE) so it outlives each ferry process, and a lease kept as a file
// beside it. The real ones live in the cluster (src/cluster/); the site suite proves those.
import { promises as fs } from 'node:fs';

export function siteStandin() {
  const file = process.env.FERRY_SITE_STANDIN_FILE;
  if (!file) throw new Error('FERRY_SITE_STANDIN_FILE is not set');
  const read = async () => {
    const t = await fs.readFile(file, 'utf8').catch(() => undefined);
    return t ? JSON.parse(t) : undefined;
  };
  const site = {
    read,
    update: async (fn) => {
      const doc = await read();
      if (!doc) throw new Error('site stand-in: no state to update');
      const next = fn(doc) ?? doc;
      await fs.writeFile(`${file}.tmp`, `${JSON.stringify(next, null, 2)}\n`);
      await fs.rename(`${file}.tmp`, file);
      return next;
    },
  };
  const lease = {
    acquire: async (holder) => {
      const f = `${file}.lease`;
      try {
        await fs.writeFile(f, holder, { flag: 'wx' });
      } catch {
        throw new Error(`site stand-in: the lease is held by ${await fs.readFile(f, 'utf8')}`);
      }
      return { holder, release: () => fs.rm(f, { force: true }) };
    },
  };
  return { site, lease };
}
