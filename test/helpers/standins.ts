import { promises as fs } from 'node:fs';
import path from 'node:path';

/**
 * Stand-ins for programs that cannot run here: kubeadm, kubelet, systemctl, modprobe and sysctl,
 * and helm for the CNI chart (installing it needs a cluster). The DNS and LB chart is
 * rendered by the real helm the test bundle carries, never by this one.
 * Each is a small shell script that appends its name and arguments to $FERRY_ROOT/standins.log
 * (one line per call) and, for kubeadm, leaves the files the real one would and lists the images
 * the real one would ask for. They never touch the real host. kubeadm join keeps a copy of its
 * --config file as kubeadm-join.seen.yaml (with its mode in kubeadm-join.seen.mode). `failOnce`
 * makes the named command fail the first time it runs. `token` and `certificateKey` are what
 * kubeadm token create and init phase upload-certs print; `holdSeconds` keeps those two and
 * kubeadm join running that long, so a test can read the process list while the secrets are live.
 */
export async function writeStandins(dir: string, opts: { failOnce?: string; etcdTag?: string; token?: string; certificateKey?: string; holdSeconds?: number } = {}): Promise<string> {
  const hold = opts.holdSeconds ? `sleep ${opts.holdSeconds}; ` : '';
  await fs.mkdir(dir, { recursive: true });
  const record = 'printf "%s %s\\n" "$(basename "$0")" "$*" >> "$FERRY_ROOT/standins.log"';
  const failOnce = (name: string) =>
    opts.failOnce === name ? `if [ ! -e "$FERRY_ROOT/.failed-${name}" ]; then touch "$FERRY_ROOT/.failed-${name}"; echo "${name}: stand-in failing once" >&2; exit 1; fi\n` : '';
  const scripts: Record<string, string> = {
    // `kubeadm config images list --config F` answers as kubeadm v1.37 would for F's version and
    // imageRepository (etcdTag: a kubeadm whose etcd differs from ferry's table). failOnce spares it.
    kubeadm: `#!/bin/sh
${record}
if [ "$1" != config ]; then :
${failOnce('kubeadm')}fi
case "$1" in
  config)
    cfg=""; prev=""; for a in "$@"; do [ "$prev" = --config ] && cfg="$a"; prev="$a"; done
    val() { sed -n "s/^$1: *//p" "$FERRY_ROOT$cfg" | tr -d '\\042\\047' | head -n 1; }
    ver=$(val kubernetesVersion); repo=$(val imageRepository)
    dns="$repo/coredns"; [ "$repo" = registry.k8s.io ] && dns="$repo/coredns/coredns"
    for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do echo "$repo/$c:$ver"; done
    echo "$dns:v1.14.6"; echo "$repo/pause:3.10.2"; echo "$repo/etcd:${opts.etcdTag ?? '3.7.0-0'}" ;;
  init)
    if [ "$2" = phase ]; then ${hold}echo "[upload-certs] Using certificate key:"; echo "${opts.certificateKey ?? '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}"; exit 0; fi
    mkdir -p "$FERRY_ROOT/etc/kubernetes/pki"
    api="https://127.0.0.1:1"; if [ -n "$FAKE_API_PORT_FILE" ]; then api="http://127.0.0.1:$(cat "$FAKE_API_PORT_FILE")"; fi
    printf 'apiVersion: v1\\nkind: Config\\nclusters: [{name: k, cluster: {server: "%s", insecure-skip-tls-verify: true}}]\\ncontexts: [{name: k, context: {cluster: k, user: a}}]\\ncurrent-context: k\\nusers: [{name: a, user: {token: x}}]\\n' "$api" > "$FERRY_ROOT/etc/kubernetes/admin.conf"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$FERRY_ROOT/etc/kubernetes/pki/ca.key" -out "$FERRY_ROOT/etc/kubernetes/pki/ca.crt" -subj /CN=kubernetes -days 1 2>/dev/null
    echo "Your Kubernetes control-plane has initialized successfully!" ;;
  token) ${hold}echo "${opts.token ?? 'abcdef.0123456789abcdef'}" ;;
  join)
    ${hold}:
    # What kubeadm was handed, and its mode, for the test to read: ferry removes the file afterwards.
    if [ "$2" = --config ]; then cp "$FERRY_ROOT$3" "$FERRY_ROOT/kubeadm-join.seen.yaml"; stat -c %a "$FERRY_ROOT$3" > "$FERRY_ROOT/kubeadm-join.seen.mode"; fi
    mkdir -p "$FERRY_ROOT/etc/kubernetes"; echo "kubelet" > "$FERRY_ROOT/etc/kubernetes/kubelet.conf"; echo "This node has joined the cluster" ;;
esac
`,
    systemctl: `#!/bin/sh\n${record}\n${failOnce('systemctl')}exit 0\n`,
    modprobe: `#!/bin/sh\n${record}\nexit 0\n`,
    sysctl: `#!/bin/sh\n${record}\nexit 0\n`,
    kubelet: `#!/bin/sh\n${record}\nexit 0\n`,
    helm: `#!/bin/sh\n${record}\nexit 0\n`,
  };
  for (const [name, body] of Object.entries(scripts)) {
    await fs.writeFile(path.join(dir, name), body, { mode: 0o755 });
  }
  return dir;
}

export async function standinCalls(root: string): Promise<string[]> {
  return (await fs.readFile(path.join(root, 'standins.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
}
