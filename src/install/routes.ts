import type { Host } from './host.js';
import { SYSTEMD_DIR } from './paths.js';
import type { Step } from './plan.js';

/*
 * A route for the Service CIDR. kube-proxy DNATs Service IPs in the OUTPUT chain, which runs after
 * the kernel has chosen a route: on a host with no default route (common on an air-gapped site)
 * every connect() to a Service IP fails at once with "network is unreachable", before kube-proxy
 * sees it. flannel's first call to the API (10.96.0.1) is one such connect. A route for the Service
 * CIDR through the node's own interface fixes that and changes nothing where a default route exists.
 */

export const SERVICE_ROUTE_UNIT = 'ferry-service-route.service';

/** The first address of an IPv4 CIDR (10.96.0.0/12 → 10.96.0.1): the API's Service IP. */
export function firstServiceIp(cidr: string): string {
  const [ip] = cidr.split('/') as [string];
  const n = ip.split('.').reduce((a, o) => a * 256 + Number(o), 0) + 1;
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** The interface that holds `ip`, from `ip -o -4 addr show`. */
export function interfaceOf(ipAddrOutput: string, ip: string): string | undefined {
  for (const line of ipAddrOutput.split('\n')) {
    const m = /^\d+:\s+(\S+?)(@\S+)?\s+inet\s+([0-9.]+)\//.exec(line);
    if (m && m[3] === ip) return m[1];
  }
  return undefined;
}

export function serviceRouteUnit(cidr: string, dev: string, src: string): string {
  return `# Written by ferry: a route for the Service CIDR on a host without a default route (see ferry's README).
[Unit]
Description=ferry: route the Kubernetes Service CIDR through ${dev}
After=network-online.target
Wants=network-online.target
Before=kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip route replace ${cidr} dev ${dev} src ${src}

[Install]
WantedBy=multi-user.target
`;
}

/** The step: done when the kernel has a route for the Service CIDR (a default route counts). */
export function serviceRouteStep(host: Host, serviceCidr: string, nodeIp: string): Step {
  const probe = firstServiceIp(serviceCidr);
  return {
    id: 'service-route',
    title: `make sure Service IPs (${serviceCidr}) are routable on this host`,
    check: async () => (await host.run('ip', ['-4', 'route', 'get', probe], { allowFail: true })).code === 0,
    apply: async (log) => {
      const dev = interfaceOf((await host.run('ip', ['-o', '-4', 'addr', 'show'])).stdout, nodeIp);
      if (!dev) throw new Error(`no interface holds the node IP ${nodeIp}; check the answers' node.ip`);
      await host.write(`${SYSTEMD_DIR}/${SERVICE_ROUTE_UNIT}`, serviceRouteUnit(serviceCidr, dev, nodeIp));
      await host.run('ip', ['route', 'replace', serviceCidr, 'dev', dev, 'src', nodeIp]);
      await host.run('systemctl', ['daemon-reload']);
      await host.run('systemctl', ['enable', SERVICE_ROUTE_UNIT]);
      log(`no route reached ${probe}: routed ${serviceCidr} through ${dev}, and at boot by ${SERVICE_ROUTE_UNIT}`);
    },
  };
}
