import { describe, expect, it } from 'vitest';
import { firstServiceIp, interfaceOf, serviceRouteUnit } from '../../src/install/routes.js';

describe('the Service CIDR route', () => {
  it('probes the first Service IP, which is the API server\'s', () => {
    expect(firstServiceIp('10.96.0.0/12')).toBe('10.96.0.1');
    expect(firstServiceIp('172.20.255.0/24')).toBe('172.20.255.1');
  });

  it('finds the interface that holds the node IP in `ip -o -4 addr show`', () => {
    const out = [
      '1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever',
      '2: eth0    inet 10.231.0.11/24 scope global eth0\\       valid_lft forever preferred_lft forever',
      '7: ens5@if9    inet 10.0.0.5/16 brd 10.0.255.255 scope global ens5',
    ].join('\n');
    expect(interfaceOf(out, '10.231.0.11')).toBe('eth0');
    expect(interfaceOf(out, '10.0.0.5')).toBe('ens5');
    expect(interfaceOf(out, '10.231.0.1')).toBeUndefined();
  });

  it('persists the route with a oneshot unit that runs before kubelet', () => {
    const u = serviceRouteUnit('10.96.0.0/12', 'eth0', '10.231.0.11');
    expect(u).toContain('ExecStart=/sbin/ip route replace 10.96.0.0/12 dev eth0 src 10.231.0.11');
    expect(u).toMatch(/Before=kubelet\.service/);
    expect(u).toMatch(/WantedBy=multi-user\.target/);
  });
});
