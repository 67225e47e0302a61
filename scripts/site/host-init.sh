#!/bin/sh
# PID 1 of one site host (inside fresh mount, pid, net, uts, ipc and cgroup namespaces), until it
# becomes systemd: builds the host's root as an overlay of this machine's / (upper on tmpfs, the
# heavy state directories bind-mounted from the host's own disk directory), waits for its eth0,
# configures it, and execs real systemd as the host's PID 1.
#   host-init.sh NAME DIR IP/PREFIX "CONTROLLERS…"
# DIR/t is a tmpfs mounted by the harness in this machine's own mount namespace, so the host's
# root survives a power cut (`site kill`) and a boot (`site start`) finds what was installed.
set -eu
name=$1 dir=$2 addr=$3 controllers=$4
root=$dir/root

mountpoint -q "$dir/t" || { echo "host-init: $dir/t is not mounted" >&2; exit 1; }
mkdir -p "$root" "$dir/t/upper" "$dir/t/work"
first_boot=true
[ -e "$dir/t/booted" ] && first_boot=false
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/t/upper,workdir=$dir/t/work" "$root"

# State that is large or that containerd's overlay snapshotter needs on a real filesystem.
for d in var/lib/containerd var/lib/kubelet var/lib/etcd var/lib/ferry var/log srv etc/kubernetes; do
  mkdir -p "$dir/disk/$d" "$root/$d"
  mount --bind "$dir/disk/$d" "$root/$d"
done
mkdir -p "$root/lib/modules"   # kube-proxy mounts it; this kernel has no loadable modules

mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=755 tmpfs "$root/sys/fs/cgroup"
for c in $controllers; do
  mkdir -p "$root/sys/fs/cgroup/$c"
  mount -t cgroup -o "$c" cgroup "$root/sys/fs/cgroup/$c"
done
mkdir -p "$root/sys/fs/cgroup/systemd"
mount -t cgroup -o none,name=systemd cgroup "$root/sys/fs/cgroup/systemd"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"

if $first_boot; then
  # This machine's own services stay off in the host; units that would touch real devices are masked.
  for w in "$root"/etc/systemd/system/*.wants; do rm -rf "$w"; done
  for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-udev-trigger.service \
    systemd-udev-settle.service systemd-modules-load.service systemd-timesyncd.service systemd-hwdb-update.service \
    getty@.service serial-getty@.service console-getty.service systemd-firstboot.service systemd-pstore.service \
    systemd-networkd.service systemd-resolved.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$u"
  done
  echo "$name" > "$root/etc/hostname"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$root/etc/machine-id"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n' > "$root/etc/hosts"
  # No resolver beyond the site: the host asks its own address, where the site DNS will answer.
  printf 'nameserver %s\n' "${addr%/*}" > "$root/etc/resolv.conf"
  touch "$dir/t/booted"
fi
hostname "$name"

i=0
while ! ip link show eth0 >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "host-init: eth0 never arrived" >&2; exit 1; }
  sleep 0.1
done
ip link set lo up
ip addr add "$addr" dev eth0
ip link set eth0 up

echo "host-init: $name ready, starting systemd"
# pivot_root, not chroot: the mount namespace's root must be the host's own, or every container that
# runc execs into (kubectl exec, crictl exec) starts in this machine's / instead of its image.
cd "$root"
mkdir -p .host-init-old
pivot_root . .host-init-old
umount -l /.host-init-old
rmdir /.host-init-old
exec /usr/bin/env -i container=ferry-site /lib/systemd/systemd --show-status=no \
  systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1
