import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { pushStore } from '../../src/bundle/images.js';
import { registryOf } from '../../src/oci/reference.js';
import { RegistryClient } from '../../src/oci/client.js';
import { Layout } from '../../src/oci/layout.js';
import { tmpdir } from '../helpers/peers.js';

describe('a registry host is read the way image references read it', () => {
  it.each([
    ['docker.io', 'docker.io'],
    ['index.docker.io', 'docker.io'],
    ['registry-1.docker.io', 'docker.io'],
    ['quay.io', 'quay.io'],
    ['localhost', 'localhost'],
    ['127.0.0.1:5000', '127.0.0.1:5000'],
    ['[::1]:5000', '[::1]:5000'],
  ])('%s is the registry %s', (host, registry) => {
    expect(registryOf(host)).toBe(registry);
  });

  it.each(['harbor', 'library', 'bad_host.example', ''])('%j is no registry host: a reference would read it as a path', (host) => {
    expect(registryOf(host)).toBeUndefined();
  });

  it('refuses a path that is no repository path', () => {
    expect(registryOf('harbor.example', 'Site/x')).toBeUndefined();
    expect(registryOf('harbor.example', 'site/team/x')).toBe('harbor.example');
  });
});

describe('ferry images push --to', () => {
  it.each(['harbor.site.example/ferry', 'https://harbor.site.example/ferry/', '127.0.0.1:5000', 'docker.io'])('takes %s', async (to) => {
    const store = await Layout.open(path.join(await tmpdir(), 'store'));
    await expect(pushStore({ client: new RegistryClient(), store }, to)).resolves.toEqual({ images: [] });
  });

  it.each(['harbor', 'harbor.example/Ferry', 'harbor.example/a:b', ''])('refuses %j, showing the shape it wants', async (to) => {
    const store = await Layout.open(path.join(await tmpdir(), 'store'));
    await expect(pushStore({ client: new RegistryClient(), store }, to)).rejects.toMatchObject({ code: 'USAGE', message: `--to "${to}" is not REGISTRY[/prefix]`, hint: expect.stringContaining('harbor.site.example/ferry') });
  });
});
