#!/bin/sh
# Rebuilds rootfs/boot/inmate.elf from inmate.s with GNU binutils for aarch64
# (Debian: apt-get install binutils-aarch64-linux-gnu). CROSS names another
# toolchain prefix. The output is deterministic (no build id, 4 KiB pages).
set -eu
cd "$(dirname "$0")"
CROSS=${CROSS:-aarch64-linux-gnu-}
"${CROSS}as" -o inmate.o inmate.s
"${CROSS}ld" -T inmate.ld --build-id=none -z max-page-size=4096 -z noexecstack -o rootfs/boot/inmate.elf inmate.o
rm -f inmate.o
"${CROSS}readelf" -h -l rootfs/boot/inmate.elf | grep -E 'Type:|Machine:|Entry|LOAD'
