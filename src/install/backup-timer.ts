import { createHmac, randomBytes } from 'node:crypto';
import { Codes, UsageError } from '../errors.js';
import type { Host } from './host.js';
import { markerStep } from './node-steps.js';
import { BACKUP_DIR, BACKUP_KEY, SYSTEMD_DIR } from './paths.js';
import type { Step } from './plan.js';
import { BACKUP_SERVICE, BACKUP_TIMER, renderBackupUnits } from './units.js';

/*
 * The site's backup key and each server's backup timer. One key per site, made by the first
 * server's install and carried to every joining server by ferry join with the site CA key, so any
 * server's backup opens with the key an operator copied off-site once.
 */

export const BACKUP_KEY_BYTES = 32;

/** A key's public name (in each backup's header): not the key, and no help in guessing it. */
export const backupKeyId = (key: Buffer) => createHmac('sha256', key).update('ferry backup key id').digest('hex').slice(0, 16);

/** The backup key from a file; refuses a missing or malformed one with BACKUP_KEY_MISSING. */
export async function readBackupKeyFile(file: string, hint = `Copy ${BACKUP_KEY} from another server of the site (0600), or from where it was kept off-site.`): Promise<Buffer> {
  const { promises: fs } = await import('node:fs');
  let key: Buffer;
  try {
    key = await fs.readFile(file);
  } catch (e) {
    throw new UsageError(Codes.backupKeyMissing, `no backup key at ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { hint });
  }
  if (key.length !== BACKUP_KEY_BYTES) throw new UsageError(Codes.backupKeyMissing, `${file} is not a backup key (${key.length} bytes, not ${BACKUP_KEY_BYTES})`, { hint });
  return key;
}

/** Makes the site's backup key when this host has none (the first server's install); keeps one that is there. */
export async function ensureBackupKey(host: Host): Promise<'made' | 'kept'> {
  const have = await host.exists(BACKUP_KEY);
  if (have) {
    await readBackupKeyFile(host.p(BACKUP_KEY));
    return 'kept';
  }
  await host.write(BACKUP_KEY, randomBytes(BACKUP_KEY_BYTES), 0o600);
  return 'made';
}

/**
 * The backup timer of a server: the key made first on the first server (`makeKey`), else expected
 * from ferry join; the units written and the timer enabled and started.
 */
export function backupTimerStep(host: Host, o: { makeKey: boolean }): Step {
  return markerStep(host, 'backup-timer', `schedule encrypted backups of this server every 6 hours (${BACKUP_TIMER})`, 'v1', async (log) => {
    if (o.makeKey) {
      const r = await ensureBackupKey(host);
      log(r === 'made' ? `backup key made: ${BACKUP_KEY} (copy it off-site: a backup is useless without it)` : `backup key ${BACKUP_KEY} kept`);
    } else if (!(await host.exists(BACKUP_KEY))) {
      log(`warning: no backup key at ${BACKUP_KEY} (the server ferry join ran from has none); ${BACKUP_TIMER} fails until one is copied here`);
    }
    await host.mkdir(BACKUP_DIR, 0o700);
    const u = renderBackupUnits();
    await host.write(`${SYSTEMD_DIR}/${BACKUP_SERVICE}`, u.service);
    await host.write(`${SYSTEMD_DIR}/${BACKUP_TIMER}`, u.timer);
    await host.run('systemctl', ['daemon-reload']);
    await host.run('systemctl', ['enable', '--now', BACKUP_TIMER]);
    log(`${BACKUP_TIMER} enabled`);
  });
}
