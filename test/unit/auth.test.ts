import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FerryError } from '../../src/errors.js';
import { CredentialStore, parseChallenge } from '../../src/oci/auth.js';

describe('registry auth parsing', () => {
  it('parses bearer challenges with quoted and escaped values', () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' },
    });
    expect(parseChallenge('Basic realm="a \\"quoted\\" realm"')).toEqual({ scheme: 'basic', params: { realm: 'a "quoted" realm' } });
  });

  it('reads --creds with and without a registry, ports included', () => {
    const m = CredentialStore.parseCreds(['127.0.0.1:5000=u1:p:with:colons', 'harbor.site=u2:p2', 'u3:p3']);
    expect(m.get('127.0.0.1:5000')).toEqual({ username: 'u1', password: 'p:with:colons' });
    expect(m.get('harbor.site')).toEqual({ username: 'u2', password: 'p2' });
    expect(m.get('*')).toEqual({ username: 'u3', password: 'p3' });
  });

  it('prefers the registry-specific credential over the catch-all', async () => {
    const s = new CredentialStore(CredentialStore.parseCreds(['a.example=x:1', 'y:2']), '/nonexistent');
    expect(await s.get('a.example')).toEqual({ username: 'x', password: '1' });
    expect(await s.get('b.example')).toEqual({ username: 'y', password: '2' });
  });
});

describe('--creds-file refuses what is not a credentials file, by code', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-creds-'));
  const write = (name: string, text: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, text, { mode: 0o600 });
    return f;
  };
  const refusal = async (value: string) => {
    const e = await CredentialStore.readCredsFile(value).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(FerryError);
    expect((e as FerryError).code).toBe('CREDS_INVALID');
    expect((e as FerryError).hint).toBeTruthy();
    return (e as FerryError).message;
  };

  it('names an auth that is not a string, and an auths entry that is null', async () => {
    expect(await refusal(write('num.json', JSON.stringify({ auths: { 'r.example': { auth: 12 } } })))).toMatch(/auths\."r\.example"\.auth is a number, not a string/);
    expect(await refusal(write('null.json', JSON.stringify({ auths: { 'r.example': null } })))).toMatch(/auths\."r\.example" is null, not an object/);
    expect(await refusal(write('arr.json', JSON.stringify({ auths: [] })))).toMatch(/auths is not an object/);
    expect(await refusal(write('top.json', '[1]'))).toMatch(/not a JSON object|does not hold USER:PASSWORD/);
    expect(await refusal(write('user.json', JSON.stringify({ auths: { 'r.example': { username: 'u', password: {} } } })))).toMatch(/password is an object, not a string/);
  });

  it('still reads a well-formed docker config and a USER:PASSWORD line', async () => {
    const cfg = write('ok.json', JSON.stringify({ auths: { 'https://r.example/v1/': { auth: Buffer.from('u:p').toString('base64') }, 'tok.example': { identitytoken: 't' } } }));
    expect((await CredentialStore.readCredsFile(cfg)).get('r.example')).toEqual({ username: 'u', password: 'p' });
    expect((await CredentialStore.readCredsFile(`h.example=${write('line', 'a:b\n')}`)).get('h.example')).toEqual({ username: 'a', password: 'b' });
  });

  it('refuses a FIFO at once instead of waiting for a writer, and a directory', async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', ['-m', '600', fifo]);
    // No writer ever comes: a read that blocks would hang until vitest's own timeout.
    expect(await refusal(fifo)).toMatch(/is not a regular file/);
    mkdirSync(path.join(dir, 'd'), { mode: 0o700 });
    expect(await refusal(path.join(dir, 'd'))).toMatch(/is not a regular file/);
  });

  it('judges the mode of the file it reads', async () => {
    const loose = write('loose', 'a:b');
    chmodSync(loose, 0o644);
    expect(await refusal(loose)).toMatch(/open to other users \(mode 0644\)/);
  });
});
