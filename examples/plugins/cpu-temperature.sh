#!/bin/sh
# A pvbus plugin in plain shell, with mosquitto_pub/mosquitto_sub only: the contract is
# the MQTT topics, not our code. Drop it (executable) into the plugins folder:
#
#   install -m 755 examples/plugins/cpu-temperature.sh /etc/pvbus/plugins.d/
#
# `pvbus plugins` starts it with PVBUS_BROKER=host:port, PVBUS_BASE and PVBUS_PLUGIN_ID
# (here `cpu_temperature`, from the file name). It publishes the Raspberry Pi's CPU
# temperature as the device `cpu`:
#   <base>/<id>/cpu/state         {"ts":1764040000,"temperature":48.3}   (retained, °C)
#   <base>/<id>/cpu/availability  online                                  (retained)
#   <base>/<id>/status            online, and `offline` as its last will  (retained)
# Home Assistant discovery shows it as a temperature sensor; rules can use
# `cpu.temperature` once `[rules.devices] cpu = { values = ["temperature"] }` is declared.
# `<base>/<id>/cpu/refresh/set` (any payload) publishes at once.
#
# Settings (environment): PROBE_FILE (default /sys/class/thermal/thermal_zone0/temp, in
# milli-degrees), PROBE_INTERVAL (seconds, default 30).
set -eu

: "${PVBUS_BROKER:?started by pvbus plugins, which sets PVBUS_BROKER}"
: "${PVBUS_PLUGIN_ID:?started by pvbus plugins, which sets PVBUS_PLUGIN_ID}"
host=${PVBUS_BROKER%:*}
port=${PVBUS_BROKER##*:}
base=${PVBUS_BASE:-pvbus}
id=$PVBUS_PLUGIN_ID
file=${PROBE_FILE:-/sys/class/thermal/thermal_zone0/temp}
interval=${PROBE_INTERVAL:-30}
auth=""
if [ -n "${PVBUS_USERNAME:-}" ]; then
    auth="-u $PVBUS_USERNAME -P ${PVBUS_PASSWORD:-}"
fi

pub() {
    # shellcheck disable=SC2086 # $auth is empty or two options
    mosquitto_pub -h "$host" -p "$port" $auth -q 1 "$@"
}

publish_state() {
    if ! raw=$(cat "$file" 2>/dev/null); then
        echo "cannot read $file" >&2
        pub -r -t "$base/$id/cpu/availability" -m offline
        return
    fi
    temperature=$(awk -v m="$raw" 'BEGIN { printf "%.1f", m / 1000 }')
    pub -r -t "$base/$id/cpu/state" -m "{\"ts\":$(date +%s),\"temperature\":$temperature}"
    pub -r -t "$base/$id/cpu/availability" -m online
}

# One long-lived connection holds the last will and receives the commands.
# shellcheck disable=SC2086
mosquitto_sub -h "$host" -p "$port" $auth -q 1 -i "pvbus-plugin-$id" \
    --will-topic "$base/$id/status" --will-payload offline --will-retain --will-qos 1 \
    -t "$base/$id/cpu/refresh/set" | while read -r _; do publish_state; done &
commands=$!

stop() {
    kill "$commands" 2>/dev/null || true
    pub -r -t "$base/$id/status" -m offline
    exit 0
}
trap stop TERM INT

pub -r -t "$base/$id/status" -m online
echo "publishing $file every ${interval} s as $base/$id/cpu/state"
while :; do
    publish_state
    # `sleep` in the background so that SIGTERM is handled at once.
    sleep "$interval" &
    wait $! || true
done
