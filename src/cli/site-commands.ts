import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { Codes, UsageError } from '../errors.js';
import { makeOutput } from './output.js';
import { intOption } from './registry-options.js';
import { collect, examples, globals } from './shared.js';

/** The bundle archive itself is the likely mistake for --bundle: say where the directory comes from. */
async function refuseArchive(dir: string): Promise<void> {
  const st = await fs.stat(dir).catch(() => undefined);
  if (!st || st.isDirectory()) return;
  throw new UsageError(Codes.serveBundleArchive, `--bundle ${dir} is a file; ferry serve reads an unpacked bundle directory`, {
    hint: `Point --bundle at the directory \`ferry bundle unpack ${dir} --trust ferry.pub --to DIR\` wrote (ferry install unpacks to /var/lib/ferry/bundle).`,
  });
}

/** Whether --listen keeps to this machine (loopback), where plain HTTP is only a look. */
function isLoopback(listen: string): boolean {
  const host = listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

export function serveCommand(): Command {
  return new Command('serve')
    .description('serve an unpacked bundle: the OCI pull API (tags, digests, Range, catalog) and the binary repository at /files/')
    .requiredOption('--bundle <dir>', 'unpacked bundle directory (holds images/, files/ and checksums.txt)')
    .option('--listen <host:port>', 'address to listen on', '0.0.0.0:5443')
    .option('--tls-cert <pem>', 'server certificate (from `ferry pki init`: registry.crt)')
    .option('--tls-key <pem>', 'server key (registry.key)')
    .option('--shutdown-timeout <seconds>', 'on SIGTERM/SIGINT, and for the old workers on SIGHUP, how long in-flight requests may finish', '10')
    .option('--max-connections <n>', 'open connections the whole service keeps, split evenly across the workers (at least 8 each); past it, idle and stalled ones make room (default: 1024, less if the open-file limit supports fewer)')
    .option('--workers <n|auto>', 'processes serving the one port: auto is one per core; 1 is a single process, with no primary and no restart on SIGHUP', 'auto')
    .addHelpText(
      'after',
      examples([
        'ferry serve --bundle /var/lib/ferry/bundle --listen 0.0.0.0:5443 --tls-cert /etc/ferry/pki/registry.crt --tls-key /etc/ferry/pki/registry.key   # on a server after ferry install',
        'ferry serve --bundle ./unpacked --listen 127.0.0.1:5000          # plain HTTP on loopback, for a look (after bundle unpack … --to ./unpacked)',
        'curl --cacert /etc/ferry/pki/ca.crt https://registry.site.example:5443/v2/_catalog   # from a site node',
        'curl --cacert /etc/ferry/pki/ca.crt https://registry.site.example:5443/files/   # from a site node',
      ]),
    )
    .action(async (o: { bundle: string; listen: string; tlsCert?: string; tlsKey?: string; shutdownTimeout: string; maxConnections?: string; workers: string }, c: Command) => {
      const out = makeOutput(globals(c));
      if (!!o.tlsCert !== !!o.tlsKey) {
        throw new UsageError(Codes.usage, `--tls-cert and --tls-key go together; only ${o.tlsCert ? '--tls-cert' : '--tls-key'} was given`, {
          hint: 'Pass both (from `ferry pki init`), or neither for plain HTTP.',
        });
      }
      const workers = o.workers === 'auto' ? os.availableParallelism() : intOption('--workers', o.workers, 1, 1);
      await refuseArchive(o.bundle);
      if (!(o.tlsCert && o.tlsKey) && !isLoopback(o.listen)) {
        out.reporter.warn(`ferry serve listens on ${o.listen} in plain HTTP: any host that reaches it can pull every image and file, and sees them unencrypted. Pass --tls-cert and --tls-key (from \`ferry pki init\`), or --listen 127.0.0.1:PORT for a look on this machine.`);
      }
      const { startServer } = await import('../site/server.js');
      const { isWorker, runWorker, startPrimary } = await import('../site/workers.js');
      const shutdownMs = intOption('--shutdown-timeout', o.shutdownTimeout, 10, 0) * 1000;
      const serve = {
        bundleDir: o.bundle,
        listen: o.listen,
        ...(o.tlsCert && o.tlsKey ? { tls: { cert: o.tlsCert, key: o.tlsKey } } : {}),
        limits: { shutdownTimeoutMs: shutdownMs, ...(o.maxConnections !== undefined ? { maxConnections: intOption('--max-connections', o.maxConnections, 0) } : {}) },
      };
      const stopSignal = () =>
        new Promise<NodeJS.Signals>((resolve) => {
          const on = (s: NodeJS.Signals) => {
            process.off('SIGTERM', on);
            process.off('SIGINT', on);
            resolve(s);
          };
          process.on('SIGTERM', on);
          process.on('SIGINT', on);
        });
      if (isWorker()) {
        // A worker of the primary below, running this same command line. A terminal's hangup is the
        // primary's to act on; its SIGTERM or Ctrl-C may reach every process, and each drains.
        process.on('SIGHUP', () => {});
        await runWorker({ ...serve, stop: stopSignal(), shutdownTimeoutMs: shutdownMs });
        return;
      }
      // Access log lines go to stderr (the journal under systemd); stdout keeps the final result.
      const log = out.verbosity === 'quiet' ? undefined : (line: string) => process.stderr.write(`${line}\n`);
      // Signals are caught from the start: a worker may answer before the others listen, and a
      // SIGTERM or SIGHUP then must not meet their default, which kills.
      const stopped = stopSignal();
      let onHup: () => void = () => log?.('ferry serve: SIGHUP while starting: ignored');
      process.on('SIGHUP', () => onHup());
      let url: string;
      let close: () => Promise<void>;
      if (workers === 1) {
        const srv = await startServer({ ...serve, ...(log ? { log } : {}) });
        log?.(`ferry serve: ${path.resolve(o.bundle)} on ${srv.url} (listening on ${o.listen}, at most ${srv.maxConnections} connections)`);
        ({ url } = srv);
        close = () => srv.close(shutdownMs);
        onHup = () => log?.('ferry serve: SIGHUP: ignored; a single process (--workers 1) cannot restart without refusing connections, restart the service instead');
      } else {
        const primary = await startPrimary({ workers, shutdownTimeoutMs: shutdownMs, ...(log ? { log } : {}) });
        log?.(
          `ferry serve: ${path.resolve(o.bundle)} on ${primary.url} (listening on ${o.listen}, ${workers} workers, at most ${primary.maxConnections} connections in all, ${primary.maxConnectionsEach} each; SIGHUP restarts them)`,
        );
        ({ url } = primary);
        close = () => primary.close();
        onHup = () => {
          log?.(`ferry serve: SIGHUP: starting ${workers} new workers`);
          void primary.restart();
        };
      }
      // The SIGHUP handler stays: a hangup while stopping must not kill the process either.
      const signal = await stopped;
      log?.(`ferry serve: ${signal}: finishing in-flight requests (up to ${shutdownMs / 1000} s)`);
      await close();
      // The signal was named above, when the drain began: once is enough.
      out.result('ferry serve stopped: in-flight requests finished', { stopped: true, signal, url });
    });
}

export function pkiCommand(): Command {
  const pki = new Command('pki').description('the site CA and the site service certificates');
  pki.addCommand(
    new Command('init')
      .description('make the site CA (kept if it exists) and the certificate for registry.<domain>')
      .requiredOption('--domain <domain>', 'site domain; the certificate names registry.<domain>')
      .option('--ip <address>', 'an IP the site service answers on (repeatable)', collect)
      .requiredOption('--out <dir>', 'directory for ca.crt, ca.key, registry.crt, registry.key')
      .addHelpText(
        'after',
        examples([
          'ferry pki init --domain site.example --ip 10.0.0.11 --ip 10.0.0.12 --out /etc/ferry/pki   # as root on the first server (ferry install does this)',
          'openssl verify -CAfile /etc/ferry/pki/ca.crt /etc/ferry/pki/registry.crt   # after pki init',
        ]),
      )
      .action(async (o: { domain: string; ip?: string[]; out: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const { initPki } = await import('../sign/pki.js');
        const r = await initPki({ domain: o.domain, ips: o.ip ?? [], outDir: o.out });
        out.result(
          [
            `${r.caReused ? 'kept the existing site CA' : 'made a new site CA'}: ${r.caCert} (key ${r.caKey}, mode 0600)`,
            `  SHA-256 fingerprint ${r.caFingerprint}`,
            `${r.serverCert === 'issued' ? 'issued' : 'kept'} ${r.cert} for ${[...r.names, ...r.ips].join(', ')}`,
          ].join('\n'),
          r,
        );
      }),
  );
  pki.addCommand(
    new Command('issue')
      .description('issue another server certificate from the site CA (a new server, or a renewal)')
      .requiredOption('--ca-dir <dir>', 'directory holding ca.crt and ca.key')
      .option('--name <dns>', 'a DNS name for the certificate (repeatable)', collect)
      .option('--ip <address>', 'an IP address for the certificate (repeatable)', collect)
      .requiredOption('--out <prefix>', 'writes <prefix>.crt and <prefix>.key')
      .option('--days <n>', 'validity in days', '1095')
      .addHelpText('after', examples(['ferry pki issue --ca-dir /etc/ferry/pki --name registry.site.example --name s2.site.example --ip 10.0.0.12 --out /etc/ferry/pki/s2   # after pki init, as root']))
      .action(async (o: { caDir: string; name?: string[]; ip?: string[]; out: string; days: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const { issueServerCert } = await import('../sign/pki.js');
        const r = await issueServerCert({ caDir: o.caDir, names: o.name ?? [], ips: o.ip ?? [], outPrefix: o.out, days: intOption('--days', o.days, 1095) });
        out.result(`issued ${r.cert} (key ${r.key}) for ${[...r.names, ...r.ips].join(', ')}, valid until ${r.notAfter}`, r);
      }),
  );
  return pki;
}

export function containerdCommand(): Command {
  const ctd = new Command('containerd').description('containerd configuration for the site');
  ctd.addCommand(
    new Command('config')
      .description('write certs.d/<registry>/hosts.toml for every registry in a bundle, pointing at the site service only')
      .requiredOption('--bundle <dir>', 'unpacked bundle directory (its images/index.json names the registries)')
      .requiredOption('--mirror <url>', 'site service URL, in the order nodes should try them (repeatable)', collect)
      .requiredOption('--ca <file>', 'the site CA as nodes see it (absolute path)')
      .requiredOption('--out <dir>', 'writes <dir>/certs.d/… and the config_path snippets')
      .option('--config-path <dir>', 'config_path in the snippets (default: <out>/certs.d)')
      .option('--registry <host>', 'also configure this registry (repeatable)', collect)
      .addHelpText(
        'after',
        examples([
          'ferry containerd config --bundle /var/lib/ferry/bundle --mirror https://registry.site.example:5443 --ca /etc/ferry/pki/ca.crt --out /etc/containerd   # as root on a site node',
          'ferry containerd config --bundle ./unpacked --mirror https://10.0.0.11:5443 --mirror https://10.0.0.12:5443 --ca /etc/ferry/pki/ca.crt --out ./ctd   # after ferry bundle unpack … --to ./unpacked',
          'ctr images pull --hosts-dir /etc/containerd/certs.d registry.k8s.io/pause:3.10   # on a site node with containerd running',
        ]),
      )
      .action(async (o: { bundle: string; mirror: string[]; ca: string; out: string; configPath?: string; registry?: string[] }, c: Command) => {
        const out = makeOutput(globals(c));
        const { writeContainerdConfig } = await import('../install/containerd.js');
        const r = await writeContainerdConfig({
          bundleDir: o.bundle,
          mirrors: o.mirror,
          caFile: o.ca,
          outDir: o.out,
          ...(o.configPath ? { configPath: o.configPath } : {}),
          ...(o.registry ? { extraRegistries: o.registry } : {}),
        });
        out.result(
          [`wrote hosts.toml for ${r.registries.length} registries (${r.registries.join(', ')}) under ${path.join(path.resolve(o.out), 'certs.d')}`, `config_path snippets: ${r.snippets.v2} (containerd 1.6/1.7), ${r.snippets.v3} (containerd 2.x)`].join('\n'),
          r,
        );
      }),
  );
  return ctd;
}
