#!/bin/sh
# Installs the real peers that ferry's demo and tests run against (Debian/Ubuntu).
# Safe to re-run. Uses sudo when not root.
set -eu
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
PKGS="docker-registry skopeo umoci containerd runc busybox-static iproute2 iputils-ping openssh-server \
openssh-client haproxy bind9 bind9-dnsutils bind9-utils jq curl openssl apache2-utils unzip time tmux iptables libseccomp-dev pkg-config"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
else
  echo "setup: every peer package is installed"
fi
