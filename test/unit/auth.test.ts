import { describe, expect, it } from 'vitest';
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
