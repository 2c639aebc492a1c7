#!/bin/busybox sh
# PID 1 of the test guest (in the initramfs that tests/kernels/run builds). Loads the few modules the root
# filesystem needs, mounts the host's root filesystem (virtiofs tag "root") read-only at /newroot with tmpfs
# over /tmp and /run, the run's output directory writable at /run/out, the guest kernel's own modules over
# /lib/modules, then runs the guest script there under chroot and powers off. Settings come from the kernel
# command line (unknown name=value words reach init's environment): kout (host output dir), kbin (the build
# directory under test, bound where the host has it), kscript (guest
# script, as the guest sees it), kmods (the guest kernel's module tree on the host), kargs (the script's
# arguments, comma-separated).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "init: kernel $(uname -r)"
for m in $(cat /modules.load); do insmod "/modules/$m" || echo "init: insmod $m failed"; done
mkdir -p /host /newroot
i=0
until mount -t virtiofs root /host; do
  i=$((i + 1)); [ $i -ge 20 ] && { echo "init: cannot mount the virtiofs root"; poweroff -f; }
  sleep 0.2
done
mount --bind /host /newroot
mount -o remount,bind,ro /newroot
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp
mkdir -p /newroot/run/out /newroot/run/netns
mount --bind "/host$kout" /newroot/run/out
# The build directory under test, read-only where the guest sees it: a checkout under /tmp (or /run) would
# otherwise be hidden by the tmpfs above.
mkdir -p "/newroot$kbin" 2>/dev/null
mount --bind "/host$kbin" "/newroot$kbin" && mount -o remount,bind,ro "/newroot$kbin"
mount --bind "/host$kmods" /newroot/lib/modules
mount -o remount,bind,ro /newroot/lib/modules
ulimit -n 1048576
hostname guest
args=$(echo "$kargs" | tr ',' ' ')
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 /bin/bash "$kscript" $args
echo "$?" > /newroot/run/out/guest.rc
sync
echo "init: guest script exited $(cat /newroot/run/out/guest.rc); powering off"
umount /newroot/run/out
poweroff -f
