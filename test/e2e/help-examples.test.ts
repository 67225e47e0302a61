import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FERRY, ferry, ROOT } from '../helpers/cli.js';
import { tmpdir } from '../helpers/peers.js';

/*
 * Issue 12 item 8: every `--help` example works as written against the demo, or says what it
 * needs first. The demo's names stand in for the examples' (its bundle is demo-0.1.0.ferry.tar, its
 * spec bundle-spec/demo.yaml); each runnable example runs with no network but loopback.
 */

/** The demo's file for each name the examples use. */
const DEMO_NAMES: [string, string][] = [
  ['kubernetes-0.1.0.ferry.tar', 'demo-0.1.0.ferry.tar'],
  ['bundle-spec/kubernetes.yaml', 'bundle-spec/demo.yaml'],
];

type Plan = { cwd?: 'demo' | 'fresh'; code?: number; prep?: string } | { needs: string };

/** Each example, by its text in --help: how it runs here, or what it needs that this machine lacks. */
const PLAN: Record<string, Plan> = {
  'ferry lock bundle-spec/kubernetes.yaml                 # pin every image to a digest': { needs: 'the registries the spec names (the demo stops its own)' },
  'ferry lock bundle-spec/kubernetes.yaml   # needs the registries the spec names': { needs: 'the registries the spec names' },
  'ferry lock bundle-spec/kubernetes.yaml --check --json   # needs the registries the spec names': { needs: 'the registries the spec names' },
  'ferry lock bundle-spec/kubernetes.yaml --platform linux/amd64   # needs the registries the spec names': { needs: 'the registries the spec names' },
  'ferry lock demo.yaml --lock demo.lock --registry-mirror docker.io=https://mirror.corp   # needs that mirror': { needs: 'a registry mirror' },
  'ferry images pull bundle-spec/kubernetes.yaml --out store': {},
  'ferry images pull bundle-spec/kubernetes.yaml --out ./store': {},
  'ferry images pull bundle-spec/kubernetes.yaml --out ./store --platform linux/amd64': {},
  'ferry images pull bundle-spec/kubernetes.yaml --with-referrers        # signatures and SBOMs too, for the next bundle build': { needs: 'the registry the spec names, reachable' },
  'skopeo inspect oci:./store:registry.k8s.io/pause:3.10          # once a spec with that image has been pulled': { needs: 'a store holding pause' },
  'ferry images push --store store --to harbor.site.example/ferry': { needs: 'that registry' },
  'ferry images push --store ./store --to harbor.site.example/ferry --creds harbor.site.example=admin:secret   # needs that registry': { needs: 'that registry' },
  'ferry images push --store ./store --to 127.0.0.1:5000          # needs a registry there (docker-registry serve)': { needs: 'a registry on port 5000' },
  'ferry spec validate bundle-spec/kubernetes.yaml': {},
  'ferry spec schema > bundle-spec/bundle-spec.schema.json': {},
  'ferry answers validate answers.yaml': { needs: 'an answers file for a site' },
  'ferry answers schema > install-answers.schema.json   # for an editor: # yaml-language-server: $schema=install-answers.schema.json': {},
  'ferry key generate --out keys': { cwd: 'fresh' },
  'ferry key generate --out keys --passphrase-file ~/.ferry-pass': { cwd: 'fresh', prep: 'printf "demo pass\\n" > ~/.ferry-pass' },
  'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key': {},
  'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --split-size': {},
  'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --out k8s.ferry.tar --split-size': {},
  // The demo's downloads are not under dl.k8s.io, so the mirror is not asked: the rebuild is offline.
  'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --binary-mirror https://dl.k8s.io=https://artifactory.corp/dl.k8s.io': {},
  'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --platform linux/amd64': {},
  'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --offline   # after one build of it on this cache': {},
  'ferry bundle build bundle-spec/kubernetes.yaml --key keys/ferry.key --since kubernetes-0.1.0.ferry.tar --out kubernetes-0.2.0.delta.ferry.tar': {},
  'ferry bundle verify kubernetes-0.1.0.ferry.tar --trust keys/ferry.pub': {},
  'ferry bundle verify kubernetes-0.1.0.ferry.tar --trust ferry.pub': {},
  'ferry bundle verify kubernetes-0.1.0.ferry.tar.parts.json --trust ferry.pub --json': { prep: 'ferry bundle build bundle-spec/demo.yaml --key keys/ferry.key --split-size >/dev/null 2>&1' },
  'ferry bundle unpack kubernetes-0.1.0.ferry.tar --trust ferry.pub --to /var/lib/ferry/bundle   # needs root on a site server (it writes /var/lib/ferry)': { needs: 'root on a site server (it writes /var/lib/ferry)' },
  'ferry bundle inspect kubernetes-0.1.0.ferry.tar --trust ferry.pub': {},
  'ferry bundle add kubernetes-0.1.0.ferry.tar --trust ferry.pub --store ./site-store': {},
  'ferry bundle add kubernetes-0.1.0.ferry.tar --trust /etc/ferry/bundle.pub   # needs root on a site server (it writes /var/lib/ferry/store)': { needs: 'root on a site server (it writes /var/lib/ferry/store)' },
  'ferry bundle list --store ./site-store': { prep: 'ferry bundle add demo-0.1.0.ferry.tar --trust ferry.pub --store ./site-store >/dev/null 2>&1' },
  "ferry bundle list --store ./site-store --json | jq -r '.bundles[].id'": { prep: 'ferry bundle add demo-0.1.0.ferry.tar --trust ferry.pub --store ./site-store >/dev/null 2>&1' },
  'ferry bundle prune --store ./site-store --yes': { prep: 'ferry bundle add demo-0.1.0.ferry.tar --trust ferry.pub --store ./site-store >/dev/null 2>&1' },
  'ferry bundle prune --store ./site-store --dry-run': { prep: 'ferry bundle add demo-0.1.0.ferry.tar --trust ferry.pub --store ./site-store >/dev/null 2>&1' },
  'ferry bundle prune --all --yes   # needs root on a site server (it writes /var/lib/ferry/store; the images in use come from the cluster)': { needs: 'root on a site server (it writes /var/lib/ferry/store)' },
  "crictl ps -o json | jq -r '.containers[].image.image' | ferry bundle prune --in-use - --store ./site-store --dry-run   # on a site node": { needs: 'crictl on a site node' },
  'ferry bundle inspect kubernetes-0.1.0.ferry.tar --json | jq .images': {},
  'ferry serve --bundle /var/lib/ferry/bundle --listen 0.0.0.0:5443 --tls-cert /etc/ferry/pki/registry.crt --tls-key /etc/ferry/pki/registry.key   # on a server after ferry install': { needs: 'a server after ferry install' },
  'ferry serve --bundle ./unpacked --listen 127.0.0.1:5000          # plain HTTP on loopback, for a look (after bundle unpack … --to ./unpacked)': { needs: 'a long-running server: run below, stopped by SIGTERM' },
  'curl --cacert /etc/ferry/pki/ca.crt https://registry.site.example:5443/v2/_catalog   # from a site node': { needs: 'a site node' },
  'curl --cacert /etc/ferry/pki/ca.crt https://registry.site.example:5443/files/   # from a site node': { needs: 'a site node' },
  'ferry pki init --domain site.example --ip 10.0.0.11 --ip 10.0.0.12 --out /etc/ferry/pki   # as root on the first server (ferry install does this)': { needs: 'root on the first server' },
  'openssl verify -CAfile /etc/ferry/pki/ca.crt /etc/ferry/pki/registry.crt   # after pki init': { needs: 'pki init' },
  'ferry pki issue --ca-dir /etc/ferry/pki --name registry.site.example --name s2.site.example --ip 10.0.0.12 --out /etc/ferry/pki/s2   # after pki init, as root': { needs: 'pki init' },
  'ferry containerd config --bundle /var/lib/ferry/bundle --mirror https://registry.site.example:5443 --ca /etc/ferry/pki/ca.crt --out /etc/containerd   # as root on a site node': { needs: 'a site node' },
  'ferry containerd config --bundle ./unpacked --mirror https://10.0.0.11:5443 --mirror https://10.0.0.12:5443 --ca /etc/ferry/pki/ca.crt --out ./ctd   # after ferry bundle unpack … --to ./unpacked': {
    prep: 'ferry bundle unpack demo-0.1.0.ferry.tar --trust ferry.pub --to ./unpacked >/dev/null 2>&1 || [ -d unpacked ]',
  },
  'ctr images pull --hosts-dir /etc/containerd/certs.d registry.k8s.io/pause:3.10   # on a site node with containerd running': { needs: 'a site node' },
  'sudo sh install.sh site.ferry.tar --trust ferry.pub   # needs root on a site server, after the openssl and sha256sum steps ferry bundle build printed': { needs: 'root on a site server' },
  'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml --dry-run --out rendered/   # needs an answers file for this machine (not root)': { needs: 'an answers file for this machine' },
  'ferry join --answers /etc/ferry/answers.yaml --dry-run   # needs a first server where ferry install finished': { needs: 'a first server where ferry install finished' },
  'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml   # needs root on a site server and an answers file for it': { needs: 'root on a site server' },
  'ferry install site.ferry.tar --trust ferry.pub --answers answers.yaml --dry-run --json   # needs an answers file for this machine (not root)': { needs: 'an answers file for this machine' },
  'ferry state show   # needs a server where ferry install finished': { needs: 'a server where ferry install finished' },
  'ferry state show --json | jq .state.nodes   # needs a server where ferry install finished': { needs: 'a server where ferry install finished' },
  'ferry state lease break   # needs a server where ferry install finished; asks first': { needs: 'a server where ferry install finished' },
  'ferry state lease break --yes   # needs a server where ferry install finished': { needs: 'a server where ferry install finished' },
  'ferry state mirror   # needs a server where ferry install finished': { needs: 'a server where ferry install finished' },
  'ferry state operation abandon join-20261203T102400 --yes   # needs a server where ferry install finished, and that operation recorded': { needs: 'a server where ferry install finished' },
  'ferry join 10.0.0.21 --name k8s-agent-01 --role agent   # needs any server where ferry install finished, and SSH to the node': { needs: 'a server and SSH to the node' },
  'ferry join 10.0.0.12 --name k8s-server-02 --role server --bundle site.ferry.tar --wait   # needs any server where ferry install finished, and SSH to the node': { needs: 'a server and SSH to the node' },
  'ferry join --answers answers.yaml --bundle site.ferry.tar --json   # needs any server where ferry install finished, and SSH to the nodes': { needs: 'a server and SSH to the nodes' },
  // issue 20, branch daytwo
  'ferry status   # needs a server where ferry install finished': { needs: 'a server where ferry install finished' },
  'ferry status --json | jq .reasons   # needs a server where ferry install finished': { needs: 'a server where ferry install finished' },
  'ferry status --wait 10m   # needs a server where ferry install finished; exits 0 as soon as the site is healthy': { needs: 'a server where ferry install finished' },
  'ferry certs check   # needs a server where ferry install finished': { needs: 'a server where ferry install finished' },
  "ferry certs check --json | jq '.certs[] | select(.daysLeft < 90)'   # needs a server where ferry install finished": { needs: 'a server where ferry install finished' },
  'ferry certs renew   # needs a server where ferry install finished, and SSH to the other servers': { needs: 'a server where ferry install finished' },
  'ferry certs renew --local --under-days 90   # needs a server where ferry install finished (what ferry-certs.timer runs daily)': { needs: 'a server where ferry install finished' },
  'ferry reset k8s-agent-03 --dry-run   # needs a server where ferry install finished, and SSH to the node': { needs: 'a server where ferry install finished' },
  'ferry reset k8s-agent-03   # needs a server where ferry install finished, and SSH to the node; asks first (default No)': { needs: 'a server where ferry install finished' },
  'ferry reset k8s-server-02 --yes   # needs another server where ferry install finished, and SSH to the node': { needs: 'a server where ferry install finished' },
  'ferry reset --local   # needs root on the node itself, which ferry installed or joined': { needs: 'root on a node ferry joined' },
  'ferry upgrade /srv/kubernetes-0.2.0.ferry.tar --dry-run   # needs a server where ferry install finished, and SSH to every node': { needs: 'a server where ferry install finished' },
  'ferry upgrade /srv/kubernetes-0.2.0.ferry.tar --yes   # needs a server where ferry install finished, and SSH to every node': { needs: 'a server where ferry install finished' },
  'ferry upgrade /srv/kubernetes-0.2.0.ferry.tar.parts.json --trust /srv/ferry.pub --max-unavailable 2   # a split bundle; asks first (default No)': { needs: 'a server where ferry install finished' },
  // issue 22, branch operator2
  'ferry support-bundle   # needs a server where ferry install finished, and SSH to the other nodes': { needs: 'a server where ferry install finished' },
  'ferry support-bundle --out /tmp/site-support.tar.gz --json   # needs a server where ferry install finished; nodes that do not answer are listed': { needs: 'a server where ferry install finished' },
  'ferry backup save   # needs root on a server where ferry install finished': { needs: 'root on a server where ferry install finished' },
  'ferry backup save --out /media/usb/site.fbak   # needs root on a server where ferry install finished': { needs: 'root on a server where ferry install finished' },
  'ferry backup save --local   # needs root on a server where ferry install finished (what ferry-backup.timer runs every 6 hours)': { needs: 'root on a server where ferry install finished' },
  'ferry backup list   # needs root on a server where ferry install finished': { needs: 'root on a server where ferry install finished' },
  "ferry backup list --json | jq -r '.backups[0].file'   # needs root on a server where ferry install finished": { needs: 'root on a server where ferry install finished' },
  'ferry backup prune --dry-run   # needs root on a server where ferry install finished': { needs: 'root on a server where ferry install finished' },
  'ferry backup prune --keep 8   # needs root on a server where ferry install finished; asks first (default No)': { needs: 'root on a server where ferry install finished' },
  'ferry backup prune --yes --keep 28   # needs root on a server where ferry install finished (what ferry-backup.timer runs after each save)': { needs: 'root on a server where ferry install finished' },
  'ferry backup verify /var/lib/ferry/backups/ferry-backup-20260101T000000Z-k8s-server-01.fbak   # needs root on a server where ferry install finished (the key is /etc/ferry/backup.key)': { needs: 'root on a server where ferry install finished' },
  'ferry backup verify site.fbak --key /media/usb/backup.key   # needs a backup and the key kept off-site': { needs: 'a backup and its key' },
};

/** Commands whose examples say in a comment what they need (the others' owners are yet to). */
const SAYS_WHAT_IT_NEEDS = /^(images|serve|pki|containerd|lock|bundle unpack|bundle add|bundle prune|install|join|state|status|certs|reset|backup|support-bundle)\b/;
/** These say it in so many words: `# needs …`. */
const SAYS_NEEDS = /^(lock|bundle unpack|install|join|state|status|certs|reset|backup|support-bundle)\b/;

let demo: string;
let bin: string;
const examples = new Map<string, string>();

/** Every example of every command's --help, with the command it belongs to. */
async function collect(cmd: string[]): Promise<void> {
  const help = (await ferry([...cmd, '--help'])).stdout;
  for (const m of help.matchAll(/^ {2}\$ (.+)$/gm)) if (!examples.has(m[1]!.trimEnd())) examples.set(m[1]!.trimEnd(), cmd.join(' ') || 'ferry');
  const cmds = help.includes('\nCommands:\n') ? help.split('\nCommands:\n')[1]!.split('\n\n')[0]! : '';
  for (const m of cmds.matchAll(/^ {2}([a-z-]+)/gm)) if (m[1] !== 'help') await collect([...cmd, m[1]!]);
}

function sh(script: string, cwd: string, home: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile('unshare', ['-n', 'sh', '-c', `ip link set lo up && ${script}`], { cwd, env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, HOME: home, FERRY_CACHE_DIR: path.join(demo, 'cache') }, timeout: 120_000, maxBuffer: 32 << 20 }, (err, out, errOut) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${out}${errOut}` }),
    ),
  );
}

beforeAll(async () => {
  demo = await tmpdir('ferry-examples-');
  await new Promise<void>((resolve, reject) =>
    execFile('unshare', ['-n', 'sh', '-c', `ip link set lo up && ${ROOT}/node_modules/.bin/tsx scripts/demo.ts --out ${demo}/demo`], { cwd: ROOT, timeout: 240_000, maxBuffer: 32 << 20 }, (err, out, errOut) =>
      err ? reject(new Error(`${err.message}\n${out}\n${errOut}`)) : resolve(),
    ),
  );
  bin = path.join(demo, 'bin');
  await fs.mkdir(bin);
  await fs.writeFile(path.join(bin, 'ferry'), `#!/bin/sh\nexec ${process.execPath} ${FERRY} "$@"\n`, { mode: 0o755 });
  demo = path.join(demo, 'demo');
  // The examples name the trusted key ferry.pub, as the site gets it.
  await fs.copyFile(path.join(demo, 'keys', 'ferry.pub'), path.join(demo, 'ferry.pub'));
  await collect([]);
}, 300_000);
afterAll(async () => {
  if (demo) await fs.rm(path.dirname(demo), { recursive: true, force: true });
});

describe('the --help examples', () => {
  it('are each planned here: run against the demo, or named with what they need', () => {
    expect(examples.size).toBeGreaterThan(30);
    expect([...examples.keys()].filter((e) => !(e in PLAN))).toEqual([]);
    expect(Object.keys(PLAN).filter((e) => !examples.has(e))).toEqual([]);
    // Those that cannot run here say so in their own help.
    expect([...examples].filter(([e, cmd]) => SAYS_WHAT_IT_NEEDS.test(cmd) && 'needs' in PLAN[e]! && !e.includes('# ')).map(([e]) => e)).toEqual([]);
    expect([...examples].filter(([e, cmd]) => SAYS_NEEDS.test(cmd) && 'needs' in PLAN[e]! && !/ {2}# needs \S/.test(e)).map(([e]) => e)).toEqual([]);
  });

  it('work as written against the demo, with no network', async () => {
    const failed: string[] = [];
    let ran = 0;
    for (const [example] of examples) {
      const plan = PLAN[example];
      if (!plan || 'needs' in plan) continue;
      const fresh = plan.cwd === 'fresh' ? await tmpdir('ferry-example-') : undefined;
      const cwd = fresh ?? demo;
      const cmd = DEMO_NAMES.reduce((c, [from, to]) => c.replaceAll(from, to), example);
      const r = await sh(plan.prep ? `${plan.prep} && ${cmd}` : cmd, cwd, fresh ?? demo);
      ran++;
      if (r.code !== (plan.code ?? 0)) failed.push(`${cmd} (exit ${r.code}): ${r.out.trim().split('\n').slice(-3).join(' / ')}`);
      if (fresh) await fs.rm(fresh, { recursive: true, force: true });
    }
    expect(failed).toEqual([]);
    expect(ran).toBeGreaterThan(15);
  }, 600_000);

  it('serve on loopback answers, then stops on SIGTERM', async () => {
    const example = [...examples.keys()].find((e) => e.startsWith('ferry serve --bundle ./unpacked'))!;
    const cmd = example.replace(/ +#.*$/, '');
    const r = await sh(
      [
        '[ -d unpacked ] || ferry bundle unpack demo-0.1.0.ferry.tar --trust ferry.pub --to ./unpacked >/dev/null 2>&1',
        `${cmd} 2>/dev/null & s=$!`,
        'for i in $(seq 100); do curl -fsS http://127.0.0.1:5000/v2/_catalog && break; sleep 0.1; done',
        'kill -TERM $s; wait $s',
      ].join('\n'),
      demo,
      demo,
    );
    expect(r.out).toMatch(/"repositories":\[/);
    expect(r.code).toBe(0);
  }, 120_000);
});
