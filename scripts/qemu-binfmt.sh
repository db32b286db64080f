#!/bin/sh
# Let this machine run Raspberry Pi (ARM) binaries directly, through qemu-user, as the
# qemu-user-binfmt package does on a Debian system whose binfmt_misc is mounted. Needed
# by tests/cross_qemu.rs: `pvbus run` starts its children by executing its own binary,
# which only works when the kernel knows to hand ARM executables to qemu.
#
#   scripts/qemu-binfmt.sh            # register qemu-aarch64 and qemu-arm (needs root)
#   scripts/qemu-binfmt.sh --remove   # unregister what this script registered
#
# Needs: apt-get install qemu-user gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf (the
# cross compilers bring the ARM C libraries that qemu loads, from /usr/<gnu triple>: set
# QEMU_LD_PREFIX=/usr/aarch64-linux-gnu or /usr/arm-linux-gnueabihf when running them).
#
# Registers under its own names (pvbus-qemu-*), skips an architecture that already has a
# handler (qemu-user-binfmt's or another), and uses the F flag: the kernel opens qemu now,
# so the handler works in any mount namespace or chroot.
set -eu

dir=/proc/sys/fs/binfmt_misc

if [ ! -e "$dir/register" ]; then
    mount -t binfmt_misc binfmt_misc "$dir"
fi

# ELF header: class (1 = 32, 2 = 64 bits), little-endian, version 1, any OS ABI,
# e_type 2 or 3 (executable or PIE, hence the 0xfe mask), e_machine 0xb7 (AArch64) or
# 0x28 (ARM).
elf_mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
aarch64_magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
arm_magic='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00'

handled() {
    # Any enabled handler whose magic is that of $1 (qemu-user-binfmt calls it qemu-$1).
    for entry in "$dir"/*; do
        case "$(basename "$entry")" in register | status) continue ;; esac
        if grep -q "^interpreter .*qemu-$1" "$entry" 2>/dev/null && grep -q '^enabled' "$entry"; then
            return 0
        fi
    done
    return 1
}

register() {
    arch=$1 magic=$2
    name=pvbus-qemu-$arch
    if handled "$arch"; then
        echo "qemu-$arch: a binfmt handler is already registered"
        return
    fi
    qemu=$(command -v "qemu-$arch-static" || command -v "qemu-$arch" || true)
    if [ -z "$qemu" ]; then
        echo "qemu-$arch not found: apt-get install qemu-user" >&2
        exit 1
    fi
    printf ':%s:M::%s:%s:%s:F\n' "$name" "$magic" "$elf_mask" "$qemu" > "$dir/register"
    echo "qemu-$arch: registered as $dir/$name ($qemu)"
}

if [ "${1:-}" = --remove ]; then
    for arch in aarch64 arm; do
        if [ -e "$dir/pvbus-qemu-$arch" ]; then
            echo -1 > "$dir/pvbus-qemu-$arch"
            echo "pvbus-qemu-$arch: removed"
        fi
    done
    exit 0
fi

register aarch64 "$aarch64_magic"
register arm "$arm_magic"
