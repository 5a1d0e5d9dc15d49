#!/bin/sh
# /init of the Vireo guest: PID 1, run by busybox sh. It runs from the
# initramfs; with root=/dev/XXX on the kernel command line it then mounts
# that disk (rootfs.ext4, the same tree) and runs a second time from there.

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

# Mounts the root= disk on /newroot and switch_roots to it. Only returns
# (to carry on from the initramfs) if the disk is unusable: a shell with a
# reason on the console beats a kernel panic.
vireo_switch_root() {
    dev=$1
    case "$dev" in
        /dev/?*) ;;
        *)
            echo "vireo: cannot mount root $dev: only root=/dev/... is supported"
            return 1
            ;;
    esac
    # Disks appear once virtio_blk has probed them; give that 5 seconds.
    tries=50
    while [ ! -b "$dev" ] && [ "$tries" -gt 0 ]; do
        sleep 0.1
        tries=$((tries - 1))
    done
    if [ ! -b "$dev" ]; then
        echo "vireo: cannot mount root $dev: no such block device after 5s"
        return 1
    fi
    # switch_root needs /newroot to be a mount point (not a directory on /).
    mkdir -p /newroot
    if ! err=$(mount -t ext4 -o rw "$dev" /newroot 2>&1); then
        echo "vireo: cannot mount root $dev as ext4: ${err:-mount failed}"
        return 1
    fi
    # Checked here because a failing `exec switch_root` would kill PID 1.
    if [ ! -x /newroot/init ]; then
        umount /newroot
        echo "vireo: cannot mount root $dev: it has no executable /init"
        return 1
    fi
    echo "vireo: switching to root $dev"
    # switch_root empties the initramfs but leaves mounts alone; the disk's
    # /init mounts its own, so these would only linger unreachable.
    umount /dev/pts /dev /run /sys /proc 2>/dev/null
    # Tells the disk's /init that the modules are loaded and root= is done.
    export VIREO_ROOT="$dev"
    exec switch_root /newroot /init
}

if [ -z "$VIREO_ROOT" ]; then
    # Modules were resolved from the kernel's dependency data at image
    # build time; the list is in load order. Missing files are skipped
    # quietly (an image may be trimmed), but a failing insmod is worth a
    # line on the console.
    while read -r ko; do
        [ -f "$ko" ] || continue
        insmod "$ko" || echo "vireo: insmod $ko failed" >&2
    done </etc/vireo/modules

    root=
    set -f # no globbing of command line words
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            root=*) root=${arg#root=} ;;
        esac
    done
    set +f
    if [ -n "$root" ]; then
        vireo_switch_root "$root"
    fi
fi

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
    if [ -n "$VIREO_ROOT" ]; then
        # Read-only flushes the disk's journal, leaving the image clean and
        # complete for tools on the host. It fails while files are open for
        # writing (acpid's log), so wait for the TERMed processes, then KILL.
        n=0
        until mount -o remount,ro / 2>/dev/null; do
            n=$((n + 1))
            [ "$n" -eq 5 ] && kill -KILL -1 2>/dev/null
            [ "$n" -ge 10 ] && echo "vireo: cannot remount / read-only" && break
            sleep 0.1
        done
    fi
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

# With a virtio console (`vireo run --console virtio`) a second shell serves
# hvc0, with hvc0 as its controlling terminal.
if [ -c /dev/hvc0 ]; then
    setsid -c sh -l <>/dev/hvc0 >&0 2>&1 &
fi

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
