#!/usr/bin/env bash
# The demo: make a base disk, write data, take a checkpoint (a differencing child), write more,
# inspect and check both, flatten the chain into one standalone VHDX and show qemu-img reads it the same;
# then a second checkpoint and an in-place merge of both into the base.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dc() { node "$here/dist/bin/diskchain.js" "$@"; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a 256 MiB dynamic base disk, with 6 MiB of data at 1 MiB"
dc create base.vhdx --size 256M
head -c $((6 * 1024 * 1024)) /dev/urandom > base-data.bin
dc write base.vhdx --offset 1M --input base-data.bin

step "2. a checkpoint: a differencing child over the base, and 1 MiB of new data in it"
dc create checkpoint.avhdx --parent base.vhdx
head -c $((1024 * 1024)) /dev/urandom > new-data.bin
dc write checkpoint.avhdx --offset 3M --input new-data.bin
echo "a sentence written in the checkpoint" | dc write checkpoint.avhdx --offset 100M

step "3. info and check of both layers"
dc info base.vhdx
dc check base.vhdx
dc info checkpoint.avhdx
dc check checkpoint.avhdx

step "4. flatten the chain (checkpoint over base) into one standalone VHDX"
dc convert checkpoint.avhdx merged.vhdx
dc info merged.vhdx
dc check merged.vhdx

step "5. the merged disk reads the same as the chain"
dc read checkpoint.avhdx -o chain.raw
dc read merged.vhdx -o merged.raw
cmp chain.raw merged.raw && echo "diskchain: chain and merged disk are identical ($(sha256sum < chain.raw | cut -c1-16)...)"
dc read merged.vhdx --offset 100M --length 37

if command -v qemu-img >/dev/null; then
  step "6. an independent reader: qemu-img"
  qemu-img check -f vhdx merged.vhdx
  qemu-img convert -f vhdx -O raw merged.vhdx qemu.raw
  cmp chain.raw qemu.raw && echo "qemu-img reads the merged disk exactly as diskchain reads the chain"
else
  echo "(qemu-img is not installed: apt-get install qemu-utils to see the independent check)"
fi

step "7. a second checkpoint, then merge both checkpoints into the base in place (Merge-VHD), verified"
dc create checkpoint2.avhdx --parent checkpoint.avhdx
echo "written in the second checkpoint" | dc write checkpoint2.avhdx --offset 200M
dc read checkpoint2.avhdx -o before.raw
dc chain checkpoint2.avhdx
dc measure checkpoint2.avhdx
dc merge checkpoint2.avhdx --into base.vhdx --verify
ls -1 "$work" | grep -v '\.raw$\|\.bin$'
dc read base.vhdx -o after.raw
cmp before.raw after.raw && echo "diskchain: the base alone now reads what the newest checkpoint read"
dc check base.vhdx
if command -v qemu-img >/dev/null; then
  qemu-img convert -f vhdx -O raw base.vhdx qemu2.raw
  cmp before.raw qemu2.raw && echo "qemu-img agrees"
fi
