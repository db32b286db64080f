#!/bin/sh
# Cross-build the pvbus binary for Raspberry Pi OS (64-bit: aarch64, 32-bit: armv7).
#
#   scripts/cross-build.sh                 # both targets, release
#   scripts/cross-build.sh aarch64         # one target (aarch64 | armv7 | a full triple)
#
# Needs, on Debian/Ubuntu:
#   apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user
#   rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
#
# The linkers are set here through CARGO_TARGET_<TRIPLE>_LINKER rather than in a committed
# .cargo/config.toml, so that native builds keep working on machines without the cross
# compilers. CC_<triple> is set too, for any -sys crate that compiles C (none does today,
# but the `cc` crate would otherwise pick the host gcc and fail at link time).
#
# Output: target/cross/<triple>/pvbus (stripped), and one line per target on stdout:
#   <triple> <path> <size in bytes> <build seconds>
# Set PVBUS_DIST to write elsewhere. Builds run under `nice -n 19`, one at a time (2 cores).
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
dist=${PVBUS_DIST:-$target_dir/cross}

triple_of() {
    case "$1" in
        aarch64|arm64) echo aarch64-unknown-linux-gnu ;;
        armv7|armhf) echo armv7-unknown-linux-gnueabihf ;;
        *-*) echo "$1" ;;
        *) echo "unknown target '$1' (aarch64, armv7 or a full triple)" >&2; exit 2 ;;
    esac
}

gnu_prefix_of() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
        armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
        *) echo "no cross compiler known for '$1'" >&2; exit 2 ;;
    esac
}

if [ $# -eq 0 ]; then
    set -- aarch64 armv7
fi

for name in "$@"; do
    triple=$(triple_of "$name")
    prefix=$(gnu_prefix_of "$triple")
    if ! command -v "$prefix-gcc" >/dev/null 2>&1; then
        echo "missing $prefix-gcc: apt-get install gcc-$prefix" >&2
        exit 1
    fi
    upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
    lower=$(echo "$triple" | tr '-' '_')
    start=$(date +%s)
    env "CARGO_TARGET_${upper}_LINKER=$prefix-gcc" \
        "CC_${lower}=$prefix-gcc" \
        "AR_${lower}=$prefix-ar" \
        nice -n 19 cargo build --release --bin pvbus --target "$triple" \
        --manifest-path "$root/Cargo.toml" >&2
    seconds=$(( $(date +%s) - start ))
    mkdir -p "$dist/$triple"
    "$prefix-strip" -o "$dist/$triple/pvbus" "$target_dir/$triple/release/pvbus"
    size=$(wc -c < "$dist/$triple/pvbus" | tr -d ' ')
    echo "$triple $dist/$triple/pvbus $size $seconds"
done
