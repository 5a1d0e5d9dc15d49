#!/bin/sh
# /init of the Vireo guest: PID 1, run by busybox sh straight from the
# initramfs (there is no root filesystem to switch to).

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The kernel is built without DEVTMPFS_MOUNT, so /dev is ours to mount.
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
hostname -F /etc/hostname

# Modules were resolved from the kernel's dependency data at image build
# time; the list is in load order. Missing files are skipped quietly (an
# image may be trimmed), but a failing insmod is worth a line on the console.
while read -r ko; do
    [ -f "$ko" ] || continue
    insmod "$ko" || echo "vireo: insmod $ko failed" >&2
done </etc/vireo/modules

# Nothing else would react to the ACPI power button, so busybox acpid maps
# its evdev event to /etc/acpi/PWRF/00000080 (see /etc/acpid.conf).
# acpid refuses to start without /dev/input/event0, hence the check.
if [ -e /dev/input/event0 ] && command -v acpid >/dev/null; then
    acpid
fi

# Busybox halt/poweroff/reboot (without -f) just signal PID 1, as they
# would busybox init. A shell as PID 1 gets no default action for signals,
# so trap them and do the real thing.
vireo_shutdown() {
    echo "vireo: $1"
    kill -TERM -1 2>/dev/null
    sync
    # A halted VM would sit there forever; power it off instead.
    case "$1" in
        reboot) reboot -f ;;
        *) poweroff -f ;;
    esac
}
trap 'vireo_shutdown poweroff' USR2
trap 'vireo_shutdown halt' USR1
trap 'vireo_shutdown reboot' TERM

echo "vireo guest ready"

# setsid + cttyhack give the shell a controlling terminal (job control,
# Ctrl-C). It runs in the background because `wait` is interrupted by the
# trapped signals above while a foreground command would delay them; the
# loop waits again until the shell is really gone.
setsid cttyhack sh -l </dev/console >/dev/console 2>&1 &
shell=$!
while kill -0 "$shell" 2>/dev/null; do
    wait "$shell"
done

# The shell exited (exit or Ctrl-D): the guest's job is done.
vireo_shutdown poweroff
