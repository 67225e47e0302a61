import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { FERRY } from '../helpers/cli.js';
import { tmpdir, waitFor } from '../helpers/peers.js';

const run = promisify(execFile);

/**
 * The interactive questions of ferry install, answered by a person at a real terminal: tmux runs
 * ferry, send-keys types, capture-pane reads the screen. The bundle is a minimal signed one:
 * the questions read its table, then the plan starts (and stops at a step that needs more).
 */
let session = '';
const sessions: string[] = [];
afterAll(async () => {
  for (const s of [session, ...sessions].filter(Boolean)) await run('tmux', ['kill-session', '-t', s]).catch(() => {});
});

/** Files below a directory, relative and sorted (none when it does not exist). */
async function listFiles(dir: string): Promise<string[]> {
  const out = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return out.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort();
}

/** A minimal signed bundle (no charts, so no CNI question). */
async function minimalBundle(dir: string, over: Record<string, unknown> = {}): Promise<string> {
  const { tarOf, signedTable, honestContent } = await import('../../fixtures/hostile.js');
  const { generateKeyPairSync } = await import('node:crypto');
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const bundle = path.join(dir, 'b.ferry.tar');
  await fs.writeFile(bundle, tarOf([...signedTable(key.privateKey, honestContent, [], over), ...honestContent.map((c) => ({ name: c.path, data: c.data }))]));
  return bundle;
}

/**
 * ferry in a tmux pane, offline (unshare -n) with one address (10.1.2.3 on a veth), so the
 * IP question is a choice with a default. Returns the screen, a way to type, and the transcript.
 */
async function terminal(name: string, ferryArgs: string) {
  const s = `ferry-${name}-${process.pid}`;
  sessions.push(s);
  const net = 'ip link set lo up; ip link add v0 type veth peer name v1; ip addr add 10.1.2.3/24 dev v0; ip link set v0 up; ip link set v1 up';
  const cmd = `env -u CI unshare -n sh -c '${net}; ${process.execPath} ${FERRY} ${ferryArgs} 2>&1; echo EXIT=$?; sleep 30'`;
  await run('tmux', ['new-session', '-d', '-s', s, '-x', '160', '-y', '50', cmd]);
  const screen = async () => (await run('tmux', ['capture-pane', '-p', '-S', '-', '-t', s])).stdout;
  const keys = async (...ks: string[]) => {
    for (const k of ks) await run('tmux', ['send-keys', '-t', s, ...(['Enter', 'C-u', 'C-c', 'Down', 'Up'].includes(k) ? [k] : ['-l', k])]);
  };
  const answer = async (prompt: RegExp, ...ks: string[]) => {
    await waitFor(async () => prompt.test(await screen()), `prompt ${prompt}`, 20_000);
    await keys(...ks);
  };
  const exit = async () => {
    await waitFor(async () => /EXIT=\d+/.test(await screen()), 'ferry to finish', 30_000);
    const out = await screen();
    return { code: Number(/EXIT=(\d+)/.exec(out)![1]), transcript: out.slice(0, out.indexOf('EXIT=')).trimEnd() };
  };
  return { screen, keys, answer, exit };
}

/** The final question: a choice whose default (highlighted) is No. */
const FINAL = /Install with these answers\?[^\n]*\n❯ No: stop here/;
/** The choices at the summary, in order: No, Yes, then a change of each answer. */
const CHOICE = { yes: 1, domain: 2, clusterFqdn: 3, nodeName: 4, nodeIp: 5, podCidr: 6 } as const;

/** The questions in order, each answered with its default (Enter). */
const EVERY_QUESTION = [/Site DNS domain/, /Cluster FQDN/, /This node's name/, /This node's IP/, /Pod CIDR/, /Service CIDR/, /Extra site DNS records/, /Upstream DNS servers/];

describe('ferry install at a terminal', () => {
  it('asks each question, validates answers, shows a summary and saves the answers for reuse', async () => {
    const dir = await tmpdir();
    // A minimal signed-table archive is enough: the questions read bundle.json (the CNI list).
    const { tarOf, signedTable, honestContent } = await import('../../fixtures/hostile.js');
    const { generateKeyPairSync } = await import('node:crypto');
    const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const bundle = path.join(dir, 'b.ferry.tar');
    await fs.writeFile(bundle, tarOf([...signedTable(key.privateKey, honestContent), ...honestContent.map((c) => ({ name: c.path, data: c.data }))]));
    const root = path.join(dir, 'root');
    session = `ferry-${process.pid}`;
    // unshare -n: no network, and so no detected address; the IP question becomes a typed one.
    // A person at a terminal: CI=true (set by CI runners) would make ferry refuse to prompt.
    const cmd = `env -u CI unshare -n sh -c 'ip link set lo up; ${process.execPath} ${FERRY} install ${bundle} --root ${root} --ignore-preflight root,arch,swap,address,ports,disk,clock --yes 2>&1; echo EXIT=$?; sleep 30'`;
    await run('tmux', ['new-session', '-d', '-s', session, '-x', '160', '-y', '50', cmd]);
    const screen = async () => (await run('tmux', ['capture-pane', '-p', '-t', session])).stdout;
    const answer = async (prompt: RegExp, keys: string[]) => {
      await waitFor(async () => prompt.test(await screen()), `prompt ${prompt}`, 20_000);
      for (const k of keys) await run('tmux', ['send-keys', '-t', session, ...(k === 'Enter' || k === 'C-u' ? [k] : ['-l', k])]);
    };
    await answer(/Site DNS domain/, ['C-u', 'plant.example', 'Enter']);
    // A capital letter is named as such.
    await answer(/Cluster FQDN/, ['C-u', 'K8s.plant.example', 'Enter']);
    await waitFor(async () => /clusterFqdn "K8s\.plant\.example" has a capital letter \(K\)/.test(await screen()), 'the capital-letter message');
    await run('tmux', ['send-keys', '-t', session, 'C-u']);
    await run('tmux', ['send-keys', '-t', session, '-l', 'k8s-cluster.plant.example']);
    await run('tmux', ['send-keys', '-t', session, 'Enter']);
    await answer(/This node's name/, ['C-u', 'Bad_Name', 'Enter']);
    await waitFor(async () => /node\.name "Bad_Name" is not valid/.test(await screen()), 'the validation message');
    await run('tmux', ['send-keys', '-t', session, 'C-u']);
    await run('tmux', ['send-keys', '-t', session, '-l', 'k8s-server-01']);
    await run('tmux', ['send-keys', '-t', session, 'Enter']);
    await answer(/This node's IP/, ['10.0.0.300', 'Enter']);
    await waitFor(async () => /node\.ip "10\.0\.0\.300" is not an IP address/.test(await screen()), 'the IP validation message');
    await run('tmux', ['send-keys', '-t', session, 'C-u']);
    await run('tmux', ['send-keys', '-t', session, '-l', '10.1.2.3']);
    await run('tmux', ['send-keys', '-t', session, 'Enter']);
    await answer(/Pod CIDR/, ['Enter']);
    await answer(/Service CIDR/, ['Enter']);
    await answer(/Extra site DNS records/, ['gitlab=10.0.0.50', 'Enter']);
    await answer(/Upstream DNS servers for names outside plant\.example/, ['C-u', '10.1.2.3', 'Enter']);
    await waitFor(async () => /upstreamDns\[0\] is this node: the site DNS would forward to itself/.test(await screen()), 'the resolver refusal');
    await run('tmux', ['send-keys', '-t', session, 'C-u']);
    await run('tmux', ['send-keys', '-t', session, '-l', '10.9.9.53, 10.9.9.54']);
    await run('tmux', ['send-keys', '-t', session, 'Enter']);
    // The summary, then (no --trust) the bundle signer's fingerprint to confirm.
    await answer(/Trust the bundle signed by sha256:[a-f0-9]{64}/, ['y', 'Enter']);
    await waitFor(async () => /EXIT=\d+/.test(await screen()), 'ferry to finish', 30_000);
    const out = await screen();
    expect(out).toMatch(/domain\s+plant\.example/);
    expect(out).toMatch(/cluster FQDN\s+k8s-cluster\.plant\.example/);
    expect(out).toMatch(/answers saved to/);
    expect(out).toMatch(/signature ok: signed by sha256:/);
    const saved = parse(await fs.readFile(path.join(root, 'etc/ferry/answers.yaml'), 'utf8')) as Record<string, unknown>;
    expect(saved).toMatchObject({ apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'plant.example', node: { name: 'k8s-server-01', ip: '10.1.2.3' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12', records: [{ name: 'gitlab', ip: '10.0.0.50' }], upstreamDns: ['10.9.9.53', '10.9.9.54'] });
    expect(out).toMatch(/upstream DNS\s+10\.9\.9\.53, 10\.9\.9\.54/);
    expect((await fs.stat(path.join(root, 'etc/ferry/answers.yaml'))).mode & 0o777).toBe(0o600);
  }, 90_000);

  it('pressing Enter through every prompt ends at the final question, whose default is No, with nothing written but a draft of the answers', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    const root = path.join(dir, 'root');
    const t = await terminal('enter', `install ${bundle} --root ${root} --ignore-preflight root,arch,swap,ports,disk,clock`);
    for (const q of EVERY_QUESTION) await t.answer(q, 'Enter');
    await t.answer(FINAL, 'Enter');
    const { code, transcript } = await t.exit();
    // The transcript, for the closing note.
    console.log(`--- pressing Enter through every prompt of ferry install ---\n${transcript}\n--- exit ${code} ---`);
    expect(transcript).toMatch(/node\s+.*\(10\.1\.2\.3\)/);
    expect(transcript.replace(/\n/g, '')).toMatch(/error\[USAGE\]: installation cancelled: nothing was written but a draft of the answers, .*answers\.draft\.yaml/);
    expect(transcript).not.toMatch(/Trust the bundle|signature ok|answers saved/);
    expect(code).toBe(2);
    // Nothing but the draft: no answers file, no log, no state.
    expect(await listFiles(root)).toEqual(['var/lib/ferry/answers.draft.yaml']);
  }, 90_000);

  it('Ctrl-C at a question ends calmly with exit 130, not as an internal error', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    const root = path.join(dir, 'root');
    const t = await terminal('ctrlc', `install ${bundle} --root ${root} --ignore-preflight root,arch,swap,ports,disk,clock`);
    await t.answer(/Site DNS domain/, 'Enter');
    await t.answer(/Cluster FQDN/, 'C-c');
    const { code, transcript } = await t.exit();
    expect(transcript).toMatch(/cancelled at "Cluster FQDN \(every node reaches the API by this name\)": nothing more was done\./);
    expect(transcript).not.toMatch(/error\[|INTERNAL|a bug in ferry/);
    expect(code).toBe(130);
    // The one answer given is kept as a draft, and nothing else was written.
    expect(transcript.replace(/\n/g, '')).toMatch(/the answers given so far are kept in .*answers\.draft\.yaml/);
    expect(await listFiles(root)).toEqual(['var/lib/ferry/answers.draft.yaml']);
    expect(parse(await fs.readFile(path.join(root, 'var/lib/ferry/answers.draft.yaml'), 'utf8'))).toEqual({ domain: 'site.example' });
  }, 90_000);

  it('Ctrl-C at the trust question, asked from inside a step, still ends with exit 130', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    const root = path.join(dir, 'root');
    const t = await terminal('ctrlc-trust', `install ${bundle} --root ${root} --ignore-preflight root,arch,swap,address,ports,disk,clock --yes`);
    for (const q of EVERY_QUESTION) await t.answer(q, 'Enter');
    await t.answer(/Trust the bundle signed by sha256:[a-f0-9]{64}/, 'C-c');
    const { code, transcript } = await t.exit();
    expect(transcript).toMatch(/cancelled at "Trust the bundle signed by sha256:[a-f0-9]{64}\?": nothing more was done/);
    expect(transcript).not.toMatch(/error\[|INTERNAL/);
    expect(code).toBe(130);
  }, 90_000);

  it('refuses a user who is not root before asking anything, at a terminal', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    await fs.chmod(dir, 0o755);
    await fs.chmod(bundle, 0o644);
    // As nobody (setpriv drops to uid 65534), at a terminal where ferry could ask.
    const s = `ferry-nonroot2-${process.pid}`;
    sessions.push(s);
    await run('tmux', ['new-session', '-d', '-s', s, '-x', '160', '-y', '50', `env -u CI setpriv --reuid=65534 --regid=65534 --clear-groups ${process.execPath} ${FERRY} install ${bundle} 2>&1; echo EXIT=$?; sleep 30`]);
    const screen = async () => (await run('tmux', ['capture-pane', '-p', '-S', '-', '-t', s])).stdout;
    await waitFor(async () => /EXIT=\d+/.test(await screen()), 'ferry to finish', 30_000);
    const out = await screen();
    expect(out).toMatch(/error\[PREFLIGHT_FAILED\]: ferry install must run as root/);
    expect(out).toMatch(/hint: Run it with sudo/);
    expect(out).not.toMatch(/Site DNS domain|EACCES|INTERNAL/);
    expect(out).toMatch(/EXIT=2/);
  }, 60_000);
});

describe('ferry bundle verify at a terminal', () => {
  it('Ctrl-C at the trust question ends calmly with exit 130, not as a bundle cut short', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    const t = await terminal('verify-ctrlc', `bundle verify ${bundle}`);
    await t.answer(/Trust the key sha256:[a-f0-9]{64}\?/, 'C-c');
    const { code, transcript } = await t.exit();
    // The pane wraps long lines.
    expect(transcript.replace(/\n/g, '')).toMatch(/cancelled at "Trust the key sha256:[a-f0-9]{64}\? Compare it with the fingerprint its maker gave you\.": nothing more was done/);
    expect(transcript).not.toMatch(/error\[|BUNDLE_TRUNCATED|INTERNAL/);
    expect(code).toBe(130);
  }, 60_000);
});

describe('the records question', () => {
  it("refuses a record that shadows one of ferry's names at once, says why, and asks again", async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    const root = path.join(dir, 'root');
    const t = await terminal('shadow', `install ${bundle} --root ${root} --ignore-preflight root,arch,swap,ports,disk,clock`);
    await t.answer(/Site DNS domain/, 'Enter');
    await t.answer(/Cluster FQDN/, 'C-u', 'api.site.example', 'Enter');
    for (const q of EVERY_QUESTION.slice(2, -2)) await t.answer(q, 'Enter');
    // The cluster FQDN as answered, then the site registry's name.
    await t.answer(/Extra site DNS records/, 'api=10.0.0.9', 'Enter');
    await waitFor(async () => /records\[0\]\.name would answer in the site DNS as api\.site\.example, which is the cluster FQDN/.test(await t.screen()), 'the FQDN refusal');
    await t.keys('C-u', 'gitlab=10.0.0.50,registry=10.0.0.9', 'Enter');
    await waitFor(async () => /records\[1\]\.name would answer in the site DNS as registry\.site\.example, which is the site registry name/.test(await t.screen()), 'the registry refusal');
    await t.keys('C-u', 'gitlab=10.0.0.50', 'Enter');
    await t.answer(/Upstream DNS servers/, 'Enter');
    await t.answer(FINAL, 'Enter');
    const { code, transcript } = await t.exit();
    expect(transcript).toMatch(/extra records\s+gitlab=10\.0\.0\.50$/m);
    expect(code).toBe(2);
  }, 90_000);
});

describe('the installer has no dead ends', () => {
  it('a pod CIDR that holds the node IP is refused at the pod CIDR question, which can fix it, not at the end', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    const t = await terminal('podcidr', `install ${bundle} --root ${path.join(dir, 'root')} --ignore-preflight root,arch,swap,ports,disk,clock`);
    for (const q of EVERY_QUESTION.slice(0, 4)) await t.answer(q, 'Enter');
    await t.answer(/Pod CIDR/, 'C-u', '10.0.0.0/8', 'Enter');
    await waitFor(async () => /node\.ip 10\.1\.2\.3 is inside podCidr 10\.0\.0\.0\/8/.test(await t.screen()), 'the refusal at the pod CIDR question');
    await t.keys('C-u', '10.244.0.0/16', 'Enter');
    for (const q of EVERY_QUESTION.slice(5)) await t.answer(q, 'Enter');
    await t.answer(FINAL, 'Enter');
    const { code, transcript } = await t.exit();
    console.log(`--- the pod CIDR question refusing a network that holds the node IP ---\n${transcript}\n--- exit ${code} ---`);
    expect(transcript).toMatch(/pod CIDR\s+10\.244\.0\.0\/16/);
    expect(code).toBe(2);
  }, 90_000);

  it('the summary offers to change any answer: asked again with its current value as the default, the rules across fields checked again, then installs with the change', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    const root = path.join(dir, 'root');
    const t = await terminal('change', `install ${bundle} --root ${root} --ignore-preflight root,arch,swap,address,ports,disk,clock`);
    for (const q of EVERY_QUESTION.slice(0, 4)) await t.answer(q, 'Enter');
    await t.answer(/Pod CIDR/, 'C-u', '10.60.0.0/16', 'Enter');
    for (const q of EVERY_QUESTION.slice(5)) await t.answer(q, 'Enter');
    await t.answer(FINAL, ...Array<string>(CHOICE.podCidr).fill('Down'), 'Enter');
    // Asked again with the value given, not ferry's default.
    await waitFor(async () => /Pod CIDR \(10\.60\.0\.0\/16\)/.test(await t.screen()), 'the pod CIDR asked again with its current value');
    // A rule across fields is checked at this prompt too: the node IP inside the new pod CIDR.
    await t.keys('C-u', '10.0.0.0/8', 'Enter');
    await waitFor(async () => /node\.ip 10\.1\.2\.3 is inside podCidr 10\.0\.0\.0\/8/.test(await t.screen()), 'the refusal at the changed pod CIDR');
    await t.keys('C-u', '10.50.0.0/16', 'Enter');
    // The summary again, with the change, and the other answers as they were.
    await waitFor(async () => /pod CIDR\s+10\.50\.0\.0\/16[\s\S]*Change the pod CIDR \(10\.50\.0\.0\/16\)/.test(await t.screen()), 'the summary with the change');
    // Then the domain: the cluster FQDN, left at its default, follows it.
    await t.keys(...Array<string>(CHOICE.domain).fill('Down'), 'Enter');
    await t.answer(/Site DNS domain \(site\.example\)/, 'C-u', 'changed.example', 'Enter');
    await waitFor(async () => /cluster FQDN\s+k8s-cluster\.changed\.example[\s\S]*Change the domain \(changed\.example\)/.test(await t.screen()), 'the summary with the new domain');
    await t.keys(...Array<string>(CHOICE.yes).fill('Down'), 'Enter');
    await t.answer(/Trust the bundle signed by sha256:[a-f0-9]{64}/, 'y', 'Enter');
    const { code, transcript } = await t.exit();
    console.log(`--- changing answers at the summary of ferry install ---\n${transcript}\n--- exit ${code} ---`);
    expect(transcript).toMatch(/answers saved to/);
    const saved = parse(await fs.readFile(path.join(root, 'etc/ferry/answers.yaml'), 'utf8')) as Record<string, unknown>;
    expect(saved).toMatchObject({ domain: 'changed.example', podCidr: '10.50.0.0/16', node: { ip: '10.1.2.3' }, serviceCidr: '10.96.0.0/12' });
    expect(saved.clusterFqdn).toBeUndefined();
    expect(await listFiles(root)).not.toContain('var/lib/ferry/answers.draft.yaml');
  }, 120_000);

  it('declining at the summary keeps a draft (0600, not an answers file), which the next run offers as its defaults and says so', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir);
    const root = path.join(dir, 'root');
    const draft = path.join(root, 'var/lib/ferry/answers.draft.yaml');
    const first = await terminal('draft1', `install ${bundle} --root ${root} --ignore-preflight root,arch,swap,ports,disk,clock`);
    await first.answer(/Site DNS domain/, 'C-u', 'draft.example', 'Enter');
    for (const q of EVERY_QUESTION.slice(1, 4)) await first.answer(q, 'Enter');
    await first.answer(/Pod CIDR/, 'C-u', '10.61.0.0/16', 'Enter');
    await first.answer(/Service CIDR/, 'Enter');
    await first.answer(/Extra site DNS records/, 'gitlab=10.0.0.50', 'Enter');
    await first.answer(/Upstream DNS servers/, 'C-u', '10.9.9.53', 'Enter');
    await first.answer(FINAL, 'Enter');
    expect((await first.exit()).code).toBe(2);
    expect((await fs.stat(draft)).mode & 0o777).toBe(0o600);
    const text = await fs.readFile(draft, 'utf8');
    expect(text).toMatch(/^# .*not an answers file/);
    expect(parse(text)).toEqual({ domain: 'draft.example', clusterFqdn: 'k8s-cluster.draft.example', node: { name: expect.any(String), ip: '10.1.2.3' }, podCidr: '10.61.0.0/16', serviceCidr: '10.96.0.0/12', records: [{ name: 'gitlab', ip: '10.0.0.50' }], upstreamDns: ['10.9.9.53'] });
    expect(await listFiles(root)).toEqual(['var/lib/ferry/answers.draft.yaml']);

    // The next run: the draft's answers are each question's default, and it says where they come from.
    const second = await terminal('draft2', `install ${bundle} --root ${root} --ignore-preflight root,arch,swap,ports,disk,clock`);
    await second.answer(/Site DNS domain \(draft\.example\)/, 'Enter');
    expect(await second.screen()).toMatch(/answers of an unfinished ferry install \(.*answers\.draft\.yaml\) are offered as the defaults/);
    await second.answer(/Cluster FQDN .*\(k8s-cluster\.draft\.example\)/, 'Enter');
    for (const q of EVERY_QUESTION.slice(2, 4)) await second.answer(q, 'Enter');
    await second.answer(/Pod CIDR \(10\.61\.0\.0\/16\)/, 'Enter');
    await second.answer(/Service CIDR/, 'Enter');
    await second.answer(/Extra site DNS records.*\(gitlab=10\.0\.0\.50\)/, 'Enter');
    await second.answer(/Upstream DNS servers .* \(10\.9\.9\.53\)/, 'Enter');
    // Ctrl-C at the summary keeps the draft too.
    await second.answer(FINAL, 'C-c');
    const { code, transcript } = await second.exit();
    console.log(`--- a draft offered as the defaults, then Ctrl-C at the summary ---\n${transcript}\n--- exit ${code} ---`);
    expect(transcript).toMatch(/domain\s+draft\.example/);
    expect(transcript).toMatch(/pod CIDR\s+10\.61\.0\.0\/16/);
    expect(transcript).toMatch(/extra records\s+gitlab=10\.0\.0\.50/);
    expect(code).toBe(130);
    expect(parse(await fs.readFile(draft, 'utf8'))).toMatchObject({ domain: 'draft.example', podCidr: '10.61.0.0/16' });
    expect(await listFiles(root)).toEqual(['var/lib/ferry/answers.draft.yaml']);
  }, 150_000);

  it('reads the bundle first and refuses one with no Kubernetes before any question', async () => {
    const dir = await tmpdir();
    const bundle = await minimalBundle(dir, { kubernetes: null });
    const t = await terminal('nok8s', `install ${bundle} --root ${path.join(dir, 'root')} --ignore-preflight root,arch,swap,ports,disk,clock`);
    const { code, transcript } = await t.exit();
    expect(transcript.replace(/\n/g, '')).toMatch(/error\[INSTALL_REFUSED\]: .* carries no Kubernetes release .*so no questions are asked/);
    expect(transcript).not.toMatch(/Site DNS domain/);
    expect(code).toBe(2);
  }, 60_000);
});
