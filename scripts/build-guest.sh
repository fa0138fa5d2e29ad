#!/usr/bin/env bash
# Builds the tiny test guest that diskchain's VM tests boot under QEMU: Debian's cloud kernel and an
# initramfs made of busybox-static, the virtio modules and qemu-guest-agent, all from Debian packages
# (apt-get download, dpkg-deb -x: nothing is installed on the host).
#
#   scripts/build-guest.sh [--force]     prints   kernel=<path>  initrd=<path>  kernel-version=<v>
#
# Cached in .cache/guest/ (or $DISKCHAIN_GUEST_DIR). The stamp is the SHA-256 of this script: a
# changed script rebuilds, an unchanged one prints the cached paths without touching the network.
# Needs: apt-get with package lists (apt-get update), dpkg-deb, gzip, flock, sha256sum, and lz4 to
# unpack the kernel for the PVH boot (else the bzImage is booted, about twice as slow). No root.
# The packages used are listed in .cache/guest/packages.txt.
#
# What the guest does (its /init, below), in order:
#   1. mounts proc, sysfs, devtmpfs; loads the modules listed in /lib/modules/order (dependency
#      order, computed here from each module's depends= field);
#   2. if /dev/vda exists: reads the boot record (LBA 0), writes it back with boots+1 and a new random
#      boot id; then keeps a counter IN MEMORY (a shell variable, starting at 1) and writes it every
#      150 ms to LBA 1 and to the ring slot LBA 256 + (tick mod 256), each with
#      `dd conv=notrunc,fsync`, and prints `diskchain-guest: tick <n>` on the serial console.
#      After a restore of saved memory the counter continues from the saved value with the same boot
#      id; after a reboot, boots grows, the id changes and the counter starts again at 1;
#   3. if /dev/vdb exists: formats it as ext2 when it has no ext2 superblock, mounts it on /mnt/data
#      and, in a second loop with its own counter, rewrites /mnt/data/counter once a second (so
#      guest-fsfreeze-freeze has a mounted file system to freeze, and the loop blocks while frozen);
#   4. if a virtio-serial port named org.qemu.guest_agent.0 exists: starts qemu-ga on it;
#   5. powers off (sync, unmount, poweroff -f) when the ACPI power button is pressed
#      (QMP system_powerdown).
#
# On-disk layout of /dev/vda (512-byte sectors; every record is one sector of ASCII text: the fields
# below separated by single spaces, padded with spaces to 511 bytes, then "\n"):
#   LBA 0                  boot record   "DCGUEST1 boots=<n> id=<16 hex digits>"
#   LBA 1                  latest tick   "DCTICK1 boots=<n> id=<16 hex digits> tick=<t>"
#   LBA 2..255             never written
#   LBA 256 + (t mod 256)  tick ring     the same record as LBA 1, for every tick t
# So the guest needs a disk of at least 256 KiB (512 sectors); it never writes past LBA 511.
# Serial console lines: "diskchain-guest: ready boots=<n> id=<hex> agent=<yes|no> data=<yes|no>",
# then "diskchain-guest: tick <t>" per tick.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${DISKCHAIN_GUEST_DIR:-$ROOT/.cache/guest}
SELF="${BASH_SOURCE[0]}"
STAMP=$(sha256sum "$SELF" | cut -c1-64)
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

ARCH=x86_64-linux-gnu
# The modules the guest needs; their dependencies are added and ordered below.
WANTED_MODULES="virtio_pci virtio_blk virtio_console button evdev"

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9 # two test processes may ask at once: the second waits and then finds the cache

kernel_file() { sed -n 's/^kernel-file=//p' "$OUT/stamp"; }
print_result() {
  echo "kernel=$OUT/$(kernel_file)"
  echo "initrd=$OUT/initrd.img"
  echo "kernel-version=$(sed -n 's/^kernel-version=//p' "$OUT/stamp")"
}

if [ "$FORCE" = 0 ] && [ -f "$OUT/stamp" ] && [ "$(head -n1 "$OUT/stamp")" = "script=$STAMP" ] \
  && [ -n "$(kernel_file)" ] && [ -s "$OUT/$(kernel_file)" ] && [ -s "$OUT/initrd.img" ]; then
  print_result
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb gzip; do
  command -v "$tool" >/dev/null || { echo "build-guest: $tool is missing" >&2; exit 1; }
done

WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK/debs" "$WORK/x" "$WORK/root"

# apt-get download's messages are shown only when it fails (as root it warns that the _apt user
# cannot write the folder; the download works).
download() {
  (cd "$WORK/debs" && apt-get download -q "$@" >"$WORK/apt.log" 2>&1) \
    || { cat "$WORK/apt.log" >&2; echo "build-guest: apt-get download $* failed (run apt-get update?)" >&2; exit 1; }
}

# --- the kernel: the package the cloud meta-package depends on today ---
KPKG=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)
[ -n "$KPKG" ] || { echo "build-guest: cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
download "$KPKG"
# --- qemu-guest-agent and the libraries it links (the Depends closure; ld.so picks what it needs) ---
GA_PKGS=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances --no-pre-depends qemu-guest-agent | grep -v '^ ' | grep -v '^<' | sort -u)
# shellcheck disable=SC2086
download busybox-static $GA_PKGS
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/x"; done
ls "$WORK"/debs/*.deb | sed 's,.*/,,' >"$WORK/packages.txt"

KVER=${KPKG#linux-image-}
MODDIR="$WORK/x/lib/modules/$KVER/kernel"
[ -d "$MODDIR" ] || { echo "build-guest: $KPKG has no modules in lib/modules/$KVER" >&2; exit 1; }

# --- the kernel QEMU boots: the uncompressed ELF vmlinux through its PVH entry point when the kernel
# has one (CONFIG_PVH) and its payload can be unpacked here; else the bzImage. Under TCG the PVH
# boot skips the real-mode set-up and the in-guest decompression: about half the boot time. ---
BZIMAGE="$WORK/x/boot/vmlinuz-$KVER"
KERNEL_OUT=vmlinuz
cp "$BZIMAGE" "$WORK/vmlinuz"
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
if grep -q '^CONFIG_PVH=y' "$WORK/x/boot/config-$KVER"; then
  # The x86 boot protocol header (Documentation/x86/boot.rst): setup_sects at 0x1f1; payload_offset
  # and payload_length at 0x248/0x24c, relative to the protected-mode code after the setup sectors.
  start=$(( ($(u8 "$BZIMAGE" $((0x1f1))) + 1) * 512 + $(u32 "$BZIMAGE" $((0x248))) ))
  length=$(u32 "$BZIMAGE" $((0x24c)))
  payload() { { tail -c +$((start + 1)) "$BZIMAGE" || true; } | head -c "$1"; } # tail stops on SIGPIPE
  # every compressor but gzip gets the uncompressed size appended (scripts/Makefile.lib size_append)
  case "$(payload 6 | od -An -tx1 | tr -d ' \n')" in
    1f8b*) unpack="gzip -dc"; keep=$length ;;
    02214c18*) unpack="lz4 -dc"; keep=$((length - 4)) ;;
    fd377a585a00) unpack="xz -dc"; keep=$((length - 4)) ;;
    28b52ffd*) unpack="zstd -qdc"; keep=$((length - 4)) ;;
    *) unpack="" ;;
  esac
  if [ -n "$unpack" ] && command -v "${unpack%% *}" >/dev/null && payload "$keep" | $unpack >"$WORK/vmlinux" 2>/dev/null \
    && [ "$(head -c 4 "$WORK/vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
    KERNEL_OUT=vmlinux
  else
    echo "build-guest: booting the bzImage (cannot unpack the kernel${unpack:+ with ${unpack%% *}}; apt-get install lz4)" >&2
  fi
fi

# --- modules: find each, decompress (.ko.xz/.ko.zst: busybox insmod reads plain .ko), order by depends= ---
R="$WORK/root"
mkdir -p "$R/lib/modules" "$R/bin" "$R/sbin" "$R/usr/sbin" "$R/lib64" "$R/lib/$ARCH" "$R/etc"
module_file() { find "$MODDIR" \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" \) | head -n1; }
ORDER=()
add_module() { # depth-first: dependencies before the module
  local name=$1 file dep
  for m in "${ORDER[@]:-}"; do [ "$m" = "$name" ] && return 0; done
  file=$(module_file "$name")
  [ -n "$file" ] || { echo "build-guest: module $name not found in $KPKG" >&2; exit 1; }
  case "$file" in
    *.xz) xz -dc "$file" >"$R/lib/modules/$name.ko" ;;
    *.zst) zstd -qdc "$file" >"$R/lib/modules/$name.ko" ;;
    *) cp "$file" "$R/lib/modules/$name.ko" ;;
  esac
  for dep in $(tr '\0' '\n' <"$R/lib/modules/$name.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
    add_module "$dep"
  done
  ORDER+=("$name")
}
for m in $WANTED_MODULES; do add_module "$m"; done
printf '%s\n' "${ORDER[@]}" >"$R/lib/modules/order"

# --- busybox (static: it also makes the cpio below), qemu-ga and its libraries ---
BUSYBOX="$WORK/x/bin/busybox"
cp "$BUSYBOX" "$R/bin/busybox"
cp "$WORK/x/usr/sbin/qemu-ga" "$R/usr/sbin/qemu-ga"
LIBPATH="$WORK/x/lib/$ARCH:$WORK/x/usr/lib/$ARCH"
LDSO="$WORK/x/lib/$ARCH/ld-linux-x86-64.so.2"
"$LDSO" --library-path "$LIBPATH" --list "$WORK/x/usr/sbin/qemu-ga" >"$WORK/ldd.txt"
for lib in $(sed -n 's/^.*=> \(\/[^ ]*\) .*$/\1/p' "$WORK/ldd.txt"); do
  cp -L "$lib" "$R/lib/$ARCH/"
done
cp -L "$LDSO" "$R/lib/$ARCH/ld-linux-x86-64.so.2"
ln -s "/lib/$ARCH/ld-linux-x86-64.so.2" "$R/lib64/ld-linux-x86-64.so.2"

# --- /init ---
cat >"$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt/data /var/run
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say() { echo "diskchain-guest: $*"; }
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" || say "insmod $m failed"; done

wait_for() { i=0; while [ ! -e "$1" ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done; [ -e "$1" ]; }

# Records are one 512-byte sector of text (see scripts/build-guest.sh).
record() { printf '%-511s\n' "$2" | dd of=/dev/vda bs=512 seek="$1" count=1 conv=notrunc,fsync 2>/dev/null; }
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# The kernel's random boot id (reading /dev/urandom would wait ~1 s for the entropy pool under TCG).
id=$(tr -d '-' </proc/sys/kernel/random/boot_id | cut -c1-16)
# virtio_blk probes its disks asynchronously: wait until every virtio block device (id 2) has a node.
nblk=$(grep -l 0x0002 /sys/bus/virtio/devices/*/device 2>/dev/null | wc -l)
i=0
while [ "$(ls /sys/block | grep -c '^vd')" -lt "$nblk" ] && [ $i -lt 50 ]; do usleep 100000; i=$((i + 1)); done

boots=0
disk=no
if [ "$nblk" -ge 1 ] && wait_for /dev/vda; then
  disk=yes
  prev=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | tr -d '\000' | head -n1)
  case "$prev" in DCGUEST1\ *) boots=$(field "$prev" boots) ;; esac
  case "$boots" in '' | *[!0-9]*) boots=0 ;; esac
  boots=$((boots + 1))
  record 0 "DCGUEST1 boots=$boots id=$id"
fi

data=no
if [ "$nblk" -ge 2 ] && wait_for /dev/vdb; then
  magic=$(dd if=/dev/vdb bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
  [ "$magic" = 53ef ] || mke2fs -q /dev/vdb >/dev/null
  if mount -t ext2 /dev/vdb /mnt/data; then
    data=yes
    (j=0; while :; do j=$((j + 1)); echo "$j boots=$boots id=$id" >/mnt/data/counter.new && mv /mnt/data/counter.new /mnt/data/counter && sync; sleep 1; done) &
  fi
fi

agent=no
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] && [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ] || continue
  dev=/dev/${p##*/}
  if wait_for "$dev"; then
    qemu-ga -m virtio-serial -p "$dev" -t /run -f /run/qemu-ga.pid &
    agent=yes
  fi
done

for e in /sys/class/input/event*; do
  [ "$(cat "$e/device/name" 2>/dev/null)" = "Power Button" ] || continue
  (head -c 24 "/dev/input/${e##*/}" >/dev/null; say "power button: powering off"; sync; umount /mnt/data 2>/dev/null; poweroff -f) &
done

say "ready boots=$boots id=$id agent=$agent data=$data"
n=0
while :; do
  n=$((n + 1))
  if [ $disk = yes ]; then
    rec="DCTICK1 boots=$boots id=$id tick=$n"
    record 1 "$rec"
    record $((256 + n % 256)) "$rec"
  fi
  say "tick $n"
  usleep 150000
done
INIT
chmod 755 "$R/init"

(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -1 >"$WORK/initrd.img"

rm -f "$OUT/stamp" "$OUT/vmlinuz" "$OUT/vmlinux"
mv "$WORK/$KERNEL_OUT" "$OUT/$KERNEL_OUT"
mv "$WORK/initrd.img" "$OUT/initrd.img"
cp "$WORK/packages.txt" "$OUT/packages.txt"
printf 'script=%s\nkernel-version=%s\nkernel-file=%s\n' "$STAMP" "$KVER" "$KERNEL_OUT" >"$OUT/stamp"
rm -rf "$WORK"
print_result
