#!/bin/sh
# The backup machine's side of the cold backup (PvMonit's author's Raspberry Pi + 2.5"
# disk): run at boot (a systemd unit, or /etc/rc.local), it makes the backup, tells pvbus
# how it went, and shuts the machine down; the coldbackup plugin then cuts its power.
#
#   PVBUS_BROKER=pvbus.lan:1883 coldbackup-client.sh
#
# Settings (environment):
#   PVBUS_BROKER     host:port of the pvbus broker (required)
#   PVBUS_BASE       topic prefix (default pvbus)
#   PLUGIN_ID        the coldbackup plugin's id (default coldbackup)
#   DEVICE           its device (default backup)
#   BACKUP_COMMAND   the backup itself (default: dirvish-expire && dirvish-runall)
#   NO_SHUTDOWN=1    do not shut down afterwards (tests, manual runs)
set -u

: "${PVBUS_BROKER:?set PVBUS_BROKER=host:port of the pvbus broker}"
host=${PVBUS_BROKER%:*}
port=${PVBUS_BROKER##*:}
base=${PVBUS_BASE:-pvbus}
topic="$base/${PLUGIN_ID:-coldbackup}/${DEVICE:-backup}/done/set"
command=${BACKUP_COMMAND:-"dirvish-expire && dirvish-runall"}

if sh -c "$command"; then
    result=ok
else
    result="failed: backup command exited with $?"
fi
echo "backup: $result"

# Retry the report: the network may come up late after boot.
for _ in 1 2 3 4 5; do
    if mosquitto_pub -h "$host" -p "$port" -q 1 -t "$topic" -m "$result"; then
        break
    fi
    sleep 5
done

sync
if [ -z "${NO_SHUTDOWN:-}" ]; then
    shutdown -h now
fi
