#!/bin/sh
# Install pvbus without a Debian package: the service user, the binary and the shipped
# plugins' binaries, the configuration in /etc/pvbus/pvbus.toml (and an empty plugins
# folder beside it), and the systemd unit, enabled and started.
#
#   sudo packaging/install.sh                                 # binary found below
#   sudo packaging/install.sh --binary ./pvbus                # this binary
#   sudo packaging/install.sh --import-pvmonit /opt/PvMonit/config.yaml
#   sudo packaging/install.sh --per-process                   # pvbus@<process> units
#   DESTDIR=/tmp/root packaging/install.sh --no-systemctl     # stage files only (no root)
#
# The binary, unless --binary says: target/cross/<triple>/pvbus (scripts/cross-build.sh)
# for this machine's architecture, else target/release/pvbus, else ./pvbus. The plugins
# (pvbus-export, pvbus-wol, pvbus-coldbackup) are taken from the same folder; one that is
# missing there is reported and not installed.
# An existing /etc/pvbus/pvbus.toml is never replaced; a new one comes from --config FILE,
# from --import-pvmonit YAML, or from packaging/pvbus.toml. It is checked with
# `pvbus config check` before anything is enabled.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$here")
destdir=${DESTDIR:-}
prefix=/usr/local
binary=
config=
pvmonit=
per_process=no
systemctl=yes

# The shipped plugins (plugins/*/Cargo.toml [[bin]]; scripts/cross-build.sh builds them).
plugins="pvbus-export pvbus-wol pvbus-coldbackup"

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --import-pvmonit) pvmonit=$2; shift 2 ;;
        --per-process) per_process=yes; shift ;;
        --no-systemctl) systemctl=no; shift ;;
        --prefix) prefix=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage 2 >&2 ;;
    esac
done

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    echo "run as root (sudo), or set DESTDIR to stage the files" >&2
    exit 1
fi

if [ -z "$binary" ]; then
    case "$(uname -m)" in
        aarch64|arm64) triple=aarch64-unknown-linux-gnu ;;
        armv7l|armv6l|armhf) triple=armv7-unknown-linux-gnueabihf ;;
        *) triple=none ;;
    esac
    for candidate in "$root/target/cross/$triple/pvbus" "$root/target/release/pvbus" ./pvbus; do
        if [ -x "$candidate" ]; then binary=$candidate; break; fi
    done
fi
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "no pvbus binary: build one (cargo build --release, or scripts/cross-build.sh) or pass --binary" >&2
    exit 1
fi

bin="$destdir$prefix/bin/pvbus"
etc="$destdir/etc/pvbus"
units="$destdir/etc/systemd/system"

# 1. The service user, and the hardware groups the unit names (a missing one would stop
#    the unit from starting).
if [ -z "$destdir" ]; then
    for group in gpio i2c dialout; do
        getent group "$group" >/dev/null || groupadd --system "$group"
    done
    if ! getent passwd pvbus >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/pvbus --no-create-home \
            --shell /usr/sbin/nologin --comment "pvbus service" pvbus
    fi
fi

# 2. The binary, and the plugins built beside it.
install -D -m 0755 "$binary" "$bin"
echo "installed $bin ($("$bin" --version 2>/dev/null || echo "not runnable here"))"
built=$(dirname -- "$binary")
for plugin in $plugins; do
    if [ -x "$built/$plugin" ]; then
        install -m 0755 "$built/$plugin" "$destdir$prefix/bin/$plugin"
        echo "installed $destdir$prefix/bin/$plugin"
    else
        echo "not installed: $plugin (not in $built; scripts/cross-build.sh or" \
            "cargo build --release -p pvbus-plugin-${plugin#pvbus-} builds it)" >&2
    fi
done

# 3. The configuration: kept when it exists. The plugins folder exists too, since the
#    units make /etc read-only for pvbus (ProtectSystem=strict): `pvbus plugins` could
#    not create a missing `[plugins] folder` there.
install -d -m 0755 "$etc" "$etc/plugins.d"
if [ -e "$etc/pvbus.toml" ]; then
    echo "kept $etc/pvbus.toml"
else
    tmp=$(mktemp)
    if [ -n "$config" ]; then
        cp "$config" "$tmp"
    elif [ -n "$pvmonit" ]; then
        "$bin" import-pvmonit "$pvmonit" --output "$tmp" --force
    else
        cp "$here/pvbus.toml" "$tmp"
    fi
    install -m 0640 "$tmp" "$etc/pvbus.toml"
    rm -f "$tmp"
    echo "wrote $etc/pvbus.toml"
fi
if [ -z "$destdir" ]; then
    chgrp pvbus "$etc/pvbus.toml"
fi
"$bin" config check "$etc/pvbus.toml"

# 4. The systemd units, with this binary's path.
install -d -m 0755 "$units"
for unit in pvbus.service pvbus@.service pvbus.target; do
    sed "s#/usr/bin/pvbus#$prefix/bin/pvbus#g" "$here/systemd/$unit" > "$units/$unit"
    chmod 0644 "$units/$unit"
done
echo "installed pvbus.service, pvbus@.service and pvbus.target in $units"

if [ "$systemctl" = no ] || [ -n "$destdir" ]; then
    exit 0
fi
systemctl daemon-reload
if [ "$per_process" = yes ]; then
    # One unit per process whose section is in the file (as `pvbus run` would choose).
    systemctl disable --now pvbus.service 2>/dev/null || true
    if ! grep -q '^external_broker' "$etc/pvbus.toml"; then
        systemctl enable --now pvbus@broker.service
    fi
    for process in vedirect relays rules homeassistant plugins tm1638 lcd; do
        if grep -q "^\\[${process}[].]" "$etc/pvbus.toml"; then
            systemctl enable --now "pvbus@$process.service"
        fi
    done
else
    systemctl enable --now pvbus.service
fi
echo "pvbus is running: journalctl -u 'pvbus*' -f, or pvbus status --config /etc/pvbus/pvbus.toml"
