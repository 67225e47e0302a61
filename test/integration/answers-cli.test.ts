import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answersSchema } from '../../src/spec/answers.js';
import { ferry } from '../helpers/cli.js';
import { tmpdir } from '../helpers/peers.js';

let work: string;
beforeAll(async () => {
  work = await tmpdir('ferry-answers-cli-');
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('ferry answers', () => {
  it('schema prints the JSON Schema the bundled ferry checks answers with', async () => {
    const r = await ferry(['answers', 'schema']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(JSON.parse(JSON.stringify(answersSchema)));
  });

  it('validate refuses a bad file through the pregenerated validator, each problem at file:line:col, and accepts a good one', async () => {
    const bad = path.join(work, 'bad.yaml');
    await fs.writeFile(bad, 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\nnode: {name: s1, ip: 10.0.0.11}\npodCIDR: 10.1.0.0/16\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\nssh: {port: twenty-two}\n');
    const r = await ferry(['answers', 'validate', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${bad}:5:1: podCIDR is not a known field; did you mean podCidr?`);
    expect(r.stderr).toContain(`${bad}:8:13: ssh.port must be integer`);
    const good = path.join(work, 'good.yaml');
    await fs.writeFile(good, 'apiVersion: ferry.dev/v1alpha1\nkind: InstallAnswers\ndomain: site.test\nnode: {name: s1, ip: 10.0.0.11}\npodCidr: 10.244.0.0/16\nserviceCidr: 10.96.0.0/12\n');
    const ok = await ferry(['answers', 'validate', good, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).answers.node).toEqual({ name: 's1', ip: '10.0.0.11' });
  });
});
