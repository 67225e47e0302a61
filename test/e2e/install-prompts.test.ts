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
afterAll(async () => {
  if (session) await run('tmux', ['kill-session', '-t', session]).catch(() => {});
});

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
    const cmd = `env -u CI unshare -n sh -c 'ip link set lo up; ${process.execPath} ${FERRY} install ${bundle} --root ${root} --ignore-preflight root,arch,swap,ports,disk,clock --yes 2>&1; echo EXIT=$?; sleep 30'`;
    await run('tmux', ['new-session', '-d', '-s', session, '-x', '160', '-y', '50', cmd]);
    const screen = async () => (await run('tmux', ['capture-pane', '-p', '-t', session])).stdout;
    const answer = async (prompt: RegExp, keys: string[]) => {
      await waitFor(async () => prompt.test(await screen()), `prompt ${prompt}`, 20_000);
      for (const k of keys) await run('tmux', ['send-keys', '-t', session, ...(k === 'Enter' || k === 'C-u' ? [k] : ['-l', k])]);
    };
    await answer(/Site DNS domain/, ['C-u', 'plant.example', 'Enter']);
    await answer(/Cluster FQDN/, ['Enter']);
    await answer(/This node's name/, ['C-u', 'Bad_Name', 'Enter']);
    await waitFor(async () => /node\.name must be a node name/.test(await screen()), 'the validation message');
    await run('tmux', ['send-keys', '-t', session, 'C-u']);
    await run('tmux', ['send-keys', '-t', session, '-l', 'k8s-server-01']);
    await run('tmux', ['send-keys', '-t', session, 'Enter']);
    await answer(/This node's IP/, ['300.1.1.1', 'Enter']);
    await waitFor(async () => /node\.ip must be an IP address/.test(await screen()), 'the IP validation message');
    await run('tmux', ['send-keys', '-t', session, 'C-u']);
    await run('tmux', ['send-keys', '-t', session, '-l', '10.1.2.3']);
    await run('tmux', ['send-keys', '-t', session, 'Enter']);
    await answer(/Pod CIDR/, ['Enter']);
    await answer(/Service CIDR/, ['Enter']);
    await answer(/Extra site DNS records/, ['gitlab=10.0.0.50', 'Enter']);
    // The summary, then (no --trust) the bundle signer's fingerprint to confirm.
    await answer(/Trust the bundle signed by sha256:[a-f0-9]{64}/, ['y', 'Enter']);
    await waitFor(async () => /EXIT=\d+/.test(await screen()), 'ferry to finish', 30_000);
    const out = await screen();
    expect(out).toMatch(/domain\s+plant\.example/);
    expect(out).toMatch(/cluster FQDN\s+k8s-cluster\.plant\.example/);
    expect(out).toMatch(/answers saved to/);
    expect(out).toMatch(/signature ok: signed by sha256:/);
    const saved = parse(await fs.readFile(path.join(root, 'etc/ferry/answers.yaml'), 'utf8')) as Record<string, unknown>;
    expect(saved).toMatchObject({ apiVersion: 'ferry.dev/v1alpha1', kind: 'InstallAnswers', domain: 'plant.example', node: { name: 'k8s-server-01', ip: '10.1.2.3' }, podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12', records: [{ name: 'gitlab', ip: '10.0.0.50' }] });
    expect((await fs.stat(path.join(root, 'etc/ferry/answers.yaml'))).mode & 0o777).toBe(0o600);
  }, 90_000);
});
