import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Host } from '../../src/install/host.js';
import { resolversHad } from '../../src/install/node-steps.js';
import { resolvConf, resolversBefore } from '../../src/install/system-files.js';

describe("a node's resolv.conf", () => {
  const before = 'search corp.example lab.example\nnameserver 10.1.1.53\nnameserver 10.1.2.53\noptions edns0 timeout:2\n';

  it('lists only the site DNS, keeps the search domains and options, and keeps what it replaced as comments', () => {
    expect(resolvConf(before, ['10.0.0.21', '10.0.0.11'], 'site.example').split('\n')).toEqual([
      "# Written by ferry: only the site DNS, which forwards other names to the site's upstreams.",
      'search site.example corp.example lab.example',
      'nameserver 10.0.0.21',
      'nameserver 10.0.0.11',
      '# ferry replaced: nameserver 10.1.1.53',
      '# ferry replaced: nameserver 10.1.2.53',
      'options edns0 timeout:2',
      '',
    ]);
  });

  it('changes nothing when run again, and still knows the resolvers the node had before', () => {
    const once = resolvConf(before, ['10.0.0.21', '10.0.0.11'], 'site.example');
    expect(resolvConf(once, ['10.0.0.21', '10.0.0.11'], 'site.example')).toBe(once);
    expect(resolversBefore(before)).toEqual(['10.1.1.53', '10.1.2.53']);
    expect(resolversBefore(once)).toEqual(['10.1.1.53', '10.1.2.53']);
  });

  it("takes over an older ferry's file, which listed the old resolvers after the site DNS", () => {
    const older = "# Written by ferry: the site's own DNS first, then what this node had.\nsearch site.example corp.example\nnameserver 10.0.0.11\nnameserver 10.1.1.53\n";
    const now = resolvConf(older, ['10.0.0.11'], 'site.example');
    expect(now.split('\n').filter((l) => l.startsWith('nameserver '))).toEqual(['nameserver 10.0.0.11']);
    expect(resolversBefore(now)).toEqual(['10.1.1.53']);
  });
});

describe("the site DNS's upstreams when the answers name none", () => {
  const hostWith = async (files: Record<string, string>) => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-resolv-'));
    for (const [p, c] of Object.entries(files)) {
      await fs.mkdir(path.dirname(path.join(root, p)), { recursive: true });
      await fs.writeFile(path.join(root, p), c);
    }
    return new Host(root);
  };

  it('are the resolvers this server had, before or after ferry rewrote its resolv.conf, less the site itself', async () => {
    const before = 'search corp.example\nnameserver 10.1.1.53\nnameserver 10.0.0.11\nnameserver 10.1.2.53:5353\n';
    expect(await resolversHad(await hostWith({ '/etc/resolv.conf': before }), ['10.0.0.11'])).toEqual(['10.1.1.53']);
    const after = resolvConf(before, ['10.0.0.11'], 'site.example');
    expect(await resolversHad(await hostWith({ '/etc/resolv.conf': after }), ['10.0.0.11'])).toEqual(['10.1.1.53']);
  });

  it("look through systemd-resolved's stub to the resolvers it uses", async () => {
    const host = await hostWith({ '/etc/resolv.conf': 'nameserver 127.0.0.53\noptions edns0 trust-ad\n', '/run/systemd/resolve/resolv.conf': 'nameserver 192.168.1.1\nnameserver 192.168.1.2\n' });
    expect(await resolversHad(host, ['10.0.0.11'])).toEqual(['192.168.1.1', '192.168.1.2']);
  });
});
