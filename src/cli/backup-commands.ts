import path from 'node:path';
import { Command, Option } from 'commander';
import { Codes, UsageError } from '../errors.js';
import { Host } from '../install/host.js';
import { ADMIN_CONF, BACKUP_DIR, BACKUP_KEY } from '../install/paths.js';
import { BACKUP_KEEP } from '../install/units.js';
import { makeOutput } from './output.js';
import { confirm } from './prompt.js';
import { examples, globals } from './shared.js';

/* `ferry backup save|list|prune|verify`: this server's encrypted backups (src/ops/backup.ts). */

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

const keepOption = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(Codes.usage, `--keep ${v}: a whole number of backups, at least 1`, { hint: `--keep ${BACKUP_KEEP} (a week at one every 6 hours)` });
  return n;
};

export function backupCommand(): Command {
  const backup = new Command('backup').description(`encrypted backups of a server: etcd, kubeadm's and the site's PKI, the site state (sealed with ${BACKUP_KEY}; keep a copy of that key off-site)`);

  backup.addCommand(
    new Command('save')
      .description("take a backup of this server's etcd member and the files a restore needs, sealed with the site's backup key")
      .option('--local', "use this server's state mirror and etcd member only, not the API (what ferry-backup.timer runs)")
      .option('--out <file>', `write here instead of ${BACKUP_DIR}/ferry-backup-<time>-<node>.fbak`)
      .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
      .addOption(new Option('--etcd <ip:port>', "this server's etcd client address (for tests)").hideHelp())
      .addHelpText('after', `${examples([
        'ferry backup save   # needs root on a server where ferry install finished',
        'ferry backup save --out /media/usb/site.fbak   # needs root on a server where ferry install finished',
        'ferry backup save --local   # needs root on a server where ferry install finished (what ferry-backup.timer runs every 6 hours)',
      ])}
The backup is useless without ${BACKUP_KEY}: copy that key off-site once, apart from the backups.
`)
      .action(async (o: { local?: boolean; out?: string; root: string; etcd?: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const host = new Host(path.resolve(o.root));
        if (!(await host.exists(ADMIN_CONF))) throw new UsageError(Codes.installMissing, `this machine is not a server where ferry install finished: no ${ADMIN_CONF}`, { hint: 'Run ferry backup save on a server.' });
        if (!o.local) {
          // The newest state from the cluster into the mirror first (the mirror alone when the API does not answer).
          const { openSiteState } = await import('../cluster/site.js');
          await openSiteState({ kubeconfig: host.p(ADMIN_CONF), root: host.root, reporter: out.reporter }).readFrom();
        }
        const { saveBackup } = await import('../ops/backup.js');
        const r = await saveBackup({ host, out: o.out ? path.resolve(o.out) : undefined, endpoint: o.etcd, log: (l) => out.reporter.verbose(l) });
        out.result(`${r.file}: ${mib(r.bytes)} (etcd ${mib(r.snapshotBytes)} at revision ${r.revision}+, ${r.files} files) in ${r.seconds.toFixed(1)}s`, r);
      }),
  );

  backup.addCommand(
    new Command('list')
      .description(`the backups and pre-upgrade snapshots on this server (${BACKUP_DIR}), newest first`)
      .option('--dir <dir>', 'list this directory instead', BACKUP_DIR)
      .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
      .addHelpText('after', examples(['ferry backup list   # needs root on a server where ferry install finished', "ferry backup list --json | jq -r '.backups[0].file'   # needs root on a server where ferry install finished"]))
      .action(async (o: { dir: string; root: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const { listBackups } = await import('../ops/backup.js');
        const dir = new Host(path.resolve(o.root)).p(o.dir);
        const list = await listBackups(dir);
        const lines = list.map((r) => `${r.header?.created ?? r.modified}  ${r.kind.padEnd(11)}  ${mib(r.bytes).padStart(10)}  ${r.header ? `${r.header.site} ${r.header.node} rev ${r.header.etcd.revision} key ${r.header.keyId}  ` : ''}${r.name}${r.problem ? `  (unreadable: ${r.problem})` : ''}`);
        out.result(lines.length ? lines.join('\n') : `no backups in ${dir}`, { dir, backups: list });
      }),
  );

  backup.addCommand(
    new Command('prune')
      .description('remove the backups past the newest N (only files ferry wrote: their name and header are checked; pre-upgrade snapshots stay)')
      .option('--keep <n>', 'how many backups to keep', String(BACKUP_KEEP))
      .option('--dir <dir>', 'prune this directory instead', BACKUP_DIR)
      .option('--dry-run', 'list what would be removed, and remove nothing')
      .option('--yes', 'remove without asking')
      .option('--root <dir>', "this server's host-file prefix (for tests)", '/')
      .addHelpText('after', examples([
        'ferry backup prune --dry-run   # needs root on a server where ferry install finished',
        'ferry backup prune --keep 8   # needs root on a server where ferry install finished; asks first (default No)',
        'ferry backup prune --yes --keep 28   # needs root on a server where ferry install finished (what ferry-backup.timer runs after each save)',
      ]))
      .action(async (o: { keep: string; dir: string; dryRun?: boolean; yes?: boolean; root: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const keep = keepOption(o.keep);
        const { listBackups, pruneBackups, pruneCandidates } = await import('../ops/backup.js');
        const dir = new Host(path.resolve(o.root)).p(o.dir);
        if (o.dryRun) {
          const doomed = pruneCandidates(await listBackups(dir), keep);
          return out.result(doomed.length ? `would remove (--dry-run: nothing removed):\n${doomed.map((r) => `  ${r.name}`).join('\n')}` : `nothing to remove: at most ${keep} backups in ${dir}`, { dryRun: true, removed: doomed.map((r) => r.file) });
        }
        const r = await pruneBackups(dir, keep, async (doomed) => o.yes || confirm(`Remove ${doomed.length} backup${doomed.length === 1 ? '' : 's'} from ${dir}?\n${doomed.map((d) => `  ${d.name}`).join('\n')}\n`, '--yes', false));
        if (!r.confirmed) return out.result('nothing was removed', { dryRun: false, removed: [] });
        out.result(`${r.removed.length ? `removed ${r.removed.map((x) => x.name).join(', ')}` : 'nothing to remove'}; ${r.kept} kept${r.stale.length ? `; ${r.stale.length} left by an interrupted save removed` : ''}`, { dryRun: false, removed: r.removed.map((x) => x.file), kept: r.kept, stale: r.stale });
      }),
  );

  backup.addCommand(
    new Command('verify')
      .description("open a backup with the site's key and check all of it (every frame's tag, each entry against its manifest, etcd's own sha256 of the snapshot), writing nothing")
      .argument('<file>', 'the backup')
      .option('--key <file>', "the site's backup key", BACKUP_KEY)
      .addHelpText('after', examples([
        'ferry backup verify /var/lib/ferry/backups/ferry-backup-20260101T000000Z-k8s-server-01.fbak   # needs root on a server where ferry install finished (the key is /etc/ferry/backup.key)',
        'ferry backup verify site.fbak --key /media/usb/backup.key   # needs a backup and the key kept off-site',
      ]))
      .action(async (file: string, o: { key: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const { verifyBackup } = await import('../ops/backup.js');
        const r = await verifyBackup(path.resolve(file), path.resolve(o.key));
        out.result(`${file}: good (site ${r.header.site}, ${r.header.node}, ${r.header.created}; etcd ${mib(r.manifest.snapshot.bytes)} at revision ${r.header.etcd.revision}+, its sha256 matches; ${r.manifest.entries.length - 1} files) in ${r.seconds.toFixed(1)}s`, { file, ok: true, header: r.header, entries: r.manifest.entries, snapshot: r.manifest.snapshot, seconds: r.seconds });
      }),
  );
  return backup;
}
