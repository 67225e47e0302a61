import { describe, expect, it } from 'vitest';
import { resolvConf } from '../../src/install/system-files.js';

describe("a joining node's resolv.conf", () => {
  const before = 'search corp.example lab.example\nnameserver 10.1.1.53\nnameserver 10.1.2.53\noptions edns0 timeout:2\n';

  it("puts the site DNS and domain first and keeps the node's own name servers, search domains and options", () => {
    expect(resolvConf(before, ['10.0.0.21', '10.0.0.11'], 'site.example').split('\n')).toEqual([
      "# Written by ferry: the site's own DNS first, then what this node had.",
      'search site.example corp.example lab.example',
      'nameserver 10.0.0.21',
      'nameserver 10.0.0.11',
      'nameserver 10.1.1.53',
      'nameserver 10.1.2.53',
      'options edns0 timeout:2',
      '',
    ]);
  });

  it('changes nothing when run again', () => {
    const once = resolvConf(before, ['10.0.0.21', '10.0.0.11'], 'site.example');
    expect(resolvConf(once, ['10.0.0.21', '10.0.0.11'], 'site.example')).toBe(once);
  });
});
