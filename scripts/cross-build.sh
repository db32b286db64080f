#!/bin/sh
# Cross-build pvbus for Raspberry Pi OS (64-bit: aarch64, 32-bit: armv7): the `pvbus`
# binary and the shipped plugins' binaries (pvbus-export, pvbus-wol, pvbus-coldbackup),
# which the Debian package and packaging/install.sh install beside it.
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
# compilers. CC_<triple> and AR_<triple> are set too: ring (TLS) and psm (under the
# config parser of rumqttd) compile C and assembly with the `cc` crate, which would
# otherwise pick the host's gcc. `cargo deb --target <triple>` needs the same three
# variables (docs/raspberry-pi.md), or it rebuilds those crates.
#
# Output: target/cross/<triple>/pvbus and target/cross/<triple>/pvbus-<plugin> (stripped),
# and one line per binary on stdout:
#   <triple> <path> <size in bytes> <build seconds of the target>
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

# The binaries we ship (the root crate's and the [[bin]] of each crate under plugins/).
# Built as `cargo deb` builds them (--workspace, one --bin each): same features, so that
# `cargo deb --target <triple>` afterwards has nothing to rebuild.
binaries="pvbus pvbus-export pvbus-wol pvbus-coldbackup"

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
    selection=
    for bin in $binaries; do
        selection="$selection --bin $bin"
    done
    start=$(date +%s)
    # shellcheck disable=SC2086 # $selection is a list of arguments
    env "CARGO_TARGET_${upper}_LINKER=$prefix-gcc" \
        "CC_${lower}=$prefix-gcc" \
        "AR_${lower}=$prefix-ar" \
        nice -n 19 cargo build --release --workspace $selection --target "$triple" \
        --manifest-path "$root/Cargo.toml" >&2
    seconds=$(( $(date +%s) - start ))
    mkdir -p "$dist/$triple"
    for bin in $binaries; do
        "$prefix-strip" -o "$dist/$triple/$bin" "$target_dir/$triple/release/$bin"
        size=$(wc -c < "$dist/$triple/$bin" | tr -d ' ')
        echo "$triple $dist/$triple/$bin $size $seconds"
    done
done
