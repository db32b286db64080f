"""End-to-end test of pvbus's MQTT discovery against a real Home Assistant.

Run by tests/homeassistant_e2e.rs (`cargo test --test homeassistant_e2e -- --ignored`),
which starts a broker and the pvbus processes (VE.Direct simulators and bridge, the relay
bridge on a simulated GPIO board, `pvbus homeassistant`; or the whole demo with its
embedded broker) and then this script with the Python of a venv that has
`homeassistant` installed (tests/ha/setup.sh). It can also be run by hand against any
running pvbus (see docs/homeassistant.md).

What it does, in order, failing with a message and the tail of HA's log at the first
thing that is wrong:
1. writes a minimal HA configuration: `http` and `api` only, an MQTT config entry pointing
   at the broker, and a user with a long-lived access token (HA's own storage format,
   written before HA starts: no onboarding);
2. starts `hass` and waits for its REST API;
3. checks that every expected entity exists with its state, unit, device class and state
   class, and that no MQTT discovery error was logged;
4. marks a device offline on the bus and checks its entities become unavailable, then
   online again;
5. checks that every entity of every pvbus discovery config exists in HA under the
   `default_entity_id` pvbus gave it (HA 2025.4 derives ids from the names itself, so this
   compares pvbus's slugify with HA's, accented names included);
6. an enumeration with a code the vedirect crate does not name (`"error": 99`): unknown,
   then `99` once announced as an option, never an HA error;
7. with --panel: a TM1638 button press seen as an `event`, an LCD line set from HA's
   `text` entity and released, the TM1638 brightness set from its `number`;
8. chooses "Forced on" in a relay's mode select and checks that the relay bridge switched
   the relay (mode and real output, read back through HA);
9. restarts HA and checks everything is found again.
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import jwt  # PyJWT, a dependency of homeassistant
import paho.mqtt.client as mqtt_client
import paho.mqtt.publish as mqtt_publish

START = time.monotonic()


def log(msg):
    print(f"[ha-e2e {time.monotonic() - START:6.1f}s] {msg}", flush=True)


class Failure(Exception):
    pass


def write_config(config_dir, broker_port, http_port):
    storage = os.path.join(config_dir, ".storage")
    os.makedirs(storage, exist_ok=True)
    with open(os.path.join(config_dir, "configuration.yaml"), "w") as f:
        f.write(
            f"""homeassistant:
  name: pvbus e2e
  latitude: 45.0
  longitude: 5.0
  elevation: 300
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: FR
http:
  server_host: 127.0.0.1
  server_port: {http_port}
api:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""
        )
    now = datetime.now(timezone.utc).isoformat()
    entries = {
        "version": 1,
        "minor_version": 5,
        "key": "core.config_entries",
        "data": {
            "entries": [
                {
                    "entry_id": uuid.uuid4().hex,
                    "version": 1,
                    "minor_version": 2,
                    "domain": "mqtt",
                    "title": f"127.0.0.1:{broker_port}",
                    "data": {"broker": "127.0.0.1", "port": broker_port},
                    "options": {"discovery": True, "discovery_prefix": "homeassistant"},
                    "pref_disable_new_entities": False,
                    "pref_disable_polling": False,
                    "source": "user",
                    "unique_id": None,
                    "disabled_by": None,
                    "discovery_keys": {},
                    "subentries": [],
                    "created_at": now,
                    "modified_at": now,
                }
            ]
        },
    }
    with open(os.path.join(storage, "core.config_entries"), "w") as f:
        json.dump(entries, f)

    user_id, token_id, jwt_key = uuid.uuid4().hex, uuid.uuid4().hex, secrets.token_hex(64)
    auth = {
        "version": 1,
        "minor_version": 1,
        "key": "auth",
        "data": {
            "users": [
                {
                    "id": user_id,
                    "group_ids": ["system-admin"],
                    "is_owner": True,
                    "is_active": True,
                    "name": "pvbus e2e",
                    "system_generated": False,
                    "local_only": False,
                }
            ],
            "groups": [{"id": "system-admin", "name": "Administrators"}],
            "credentials": [],
            "refresh_tokens": [
                {
                    "id": token_id,
                    "user_id": user_id,
                    "client_id": None,
                    "client_name": "pvbus e2e",
                    "client_icon": None,
                    "token_type": "long_lived_access_token",
                    "created_at": now,
                    "access_token_expiration": 86400.0,
                    "token": secrets.token_hex(64),
                    "jwt_key": jwt_key,
                    "last_used_at": None,
                    "last_used_ip": None,
                    "expire_at": None,
                    "credential_id": None,
                    "version": None,
                }
            ],
        },
    }
    with open(os.path.join(storage, "auth"), "w") as f:
        json.dump(auth, f)
    issued = datetime.now(timezone.utc)
    return jwt.encode(
        {"iss": token_id, "iat": issued, "exp": issued + timedelta(days=1)},
        jwt_key,
        algorithm="HS256",
    )


class HomeAssistant:
    def __init__(self, hass, config_dir, http_port, token):
        self.hass, self.config_dir, self.port, self.token = hass, config_dir, http_port, token
        self.proc = None
        self.log_path = os.path.join(config_dir, "e2e-hass.log")

    def start(self):
        log("starting Home Assistant")
        self.log_file = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [self.hass, "-c", self.config_dir, "--skip-pip"],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        began = time.monotonic()
        self.wait("the REST API", 180, lambda: self.request("GET", "/api/") is not None)
        log(f"Home Assistant answers after {time.monotonic() - began:.1f}s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            if e.code == 401:
                raise Failure("HA refused the access token (401)")
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if self.proc is not None and self.proc.poll() is not None:
                raise Failure(f"hass exited with {self.proc.returncode}")
            return None

    def state(self, entity_id):
        return self.request("GET", f"/api/states/{entity_id}")

    def wait(self, what, timeout, check):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except Failure:
                raise
            if last:
                return last
            time.sleep(0.5)
        raise Failure(f"timed out after {timeout}s waiting for {what}")

    def wait_state(self, entity_id, expected, timeout=60):
        def check():
            s = self.state(entity_id)
            return s if s is not None and expected(s) else None

        try:
            return self.wait(f"{entity_id}", timeout, check)
        except Failure as e:
            raise Failure(f"{e}; last seen: {self.state(entity_id)}") from None

    def log_tail(self, lines=60):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def discovery_errors(self):
        with open(self.log_path) as f:
            text = f.read()
        bad = []
        for line in text.splitlines():
            low = line.lower()
            # HA's log lines: `<date> <time> LEVEL (thread) [logger] message`.
            serious = any(f" {level} (" in line for level in ("WARNING", "ERROR", "CRITICAL"))
            if ("mqtt" in low or "pvbus" in low) and (
                serious or "invalid" in low
            ):
                bad.append(line)
            # An entity whose state HA refuses (an enum state outside its options, a text
            # too long) raises in HA's core, not in its MQTT code.
            elif (
                "not in the list of options" in low
                or "too long (maximum length" in low
                or "too short (minimum length" in low
            ):
                bad.append(line)
        return bad


def attributes_match(state, **expected):
    attrs = state["attributes"]
    for key, value in expected.items():
        if attrs.get(key) != value:
            raise Failure(
                f"{state['entity_id']}: attribute {key} is {attrs.get(key)!r}, expected {value!r}"
            )


def is_number(s):
    try:
        float(s["state"])
        return True
    except ValueError:
        return False


def check_entities(ha, args):
    mppt, bmv, relay = args.mppt, args.bmv, args.relay
    # VE.Direct charger: numeric readings with units, an enum, a diagnostic.
    s = ha.wait_state(f"sensor.{mppt}_battery_voltage", is_number)
    attributes_match(s, unit_of_measurement="V", device_class="voltage", state_class="measurement")
    s = ha.wait_state(f"sensor.{mppt}_pv_power", is_number)
    attributes_match(s, unit_of_measurement="W", device_class="power", state_class="measurement")
    s = ha.wait_state(f"sensor.{mppt}_yield_total", is_number)
    attributes_match(s, unit_of_measurement="kWh", device_class="energy", state_class="total_increasing")
    s = ha.wait_state(f"sensor.{mppt}_charge_state", lambda s: s["state"] not in ("unknown", "unavailable"))
    attributes_match(s, device_class="enum")
    if s["state"] not in s["attributes"]["options"]:
        raise Failure(f"charge_state {s['state']} not among its options")
    ha.wait_state(f"sensor.{mppt}_off_reason", lambda s: s["state"] != "unavailable")
    # Site totals.
    s = ha.wait_state("sensor.site_consumption", is_number)
    attributes_match(s, unit_of_measurement="W")
    # Relay: mode select, real output, reason, on time today.
    s = ha.wait_state(f"select.{relay}_mode", lambda s: s["state"] in ("Forced off", "Auto", "Forced on"))
    if s["attributes"]["options"] != ["Forced off", "Auto", "Forced on"]:
        raise Failure(f"mode options are {s['attributes']['options']}")
    ha.wait_state(f"binary_sensor.{relay}_output", lambda s: s["state"] in ("on", "off"))
    ha.wait_state(f"sensor.{relay}_reason", lambda s: s["state"] not in ("unknown", "unavailable"))
    s = ha.wait_state(f"sensor.{relay}_on_time_today", is_number)
    attributes_match(s, unit_of_measurement="s", device_class="duration")
    if args.rules:
        ha.wait_state(f"sensor.{relay}_rule_status", lambda s: s["state"] not in ("unknown", "unavailable", ""))
        s = ha.wait_state("sensor.site_surplus", is_number)
        attributes_match(s, unit_of_measurement="W", device_class="power")
    # Battery monitor (last: the demo runs it ten times faster than real time).
    s = ha.wait_state(f"sensor.{bmv}_state_of_charge", is_number)
    attributes_match(s, unit_of_measurement="%", device_class="battery")
    s = ha.wait_state(f"sensor.{bmv}_charged_energy", is_number)
    attributes_match(s, unit_of_measurement="kWh", state_class="total_increasing")
    s = ha.wait_state(f"binary_sensor.{bmv}_alarm", lambda s: s["state"] in ("on", "off"))
    log("every expected entity is there, with its units")


def check_availability(ha, args):
    topic = f"pvbus/vedirect/{args.mppt}/availability"
    mqtt_publish.single(topic, "offline", retain=True, hostname="127.0.0.1", port=args.broker_port)
    ha.wait_state(f"sensor.{args.mppt}_battery_voltage", lambda s: s["state"] == "unavailable", 30)
    log(f"{args.mppt} offline on the bus: unavailable in HA")
    mqtt_publish.single(topic, "online", retain=True, hostname="127.0.0.1", port=args.broker_port)
    ha.wait_state(f"sensor.{args.mppt}_battery_voltage", is_number, 30)
    log(f"{args.mppt} online again: available in HA")


def change_mode(ha, args, option, output):
    """`output` is what the relay must do; None when the rules decide (Auto with rules)."""
    entity = f"select.{args.relay}_mode"
    ha.request("POST", "/api/services/select/select_option", {"entity_id": entity, "option": option})
    ha.wait_state(entity, lambda s: s["state"] == option, 30)
    if output is None:
        s = ha.wait_state(f"binary_sensor.{args.relay}_output", lambda s: s["state"] in ("on", "off"), 30)
        output = f"{s['state']} (the rules decide)"
    else:
        ha.wait_state(f"binary_sensor.{args.relay}_output", lambda s: s["state"] == output, 30)
    log(f"chose {option!r} in HA: the relay bridge confirmed, output {output}")


def check_script_device_comes_and_goes(ha, args):
    """A reading added by a script appears; clearing it removes the entity (no ghost)."""
    topic = "pvbus/script/cellar/state"
    state = json.dumps({"ts": int(time.time()), "temperature": 12.5})
    mqtt_publish.single(topic, state, retain=True, hostname="127.0.0.1", port=args.broker_port)
    s = ha.wait_state("sensor.cellar_temperature", lambda s: s["state"] == "12.5", 30)
    attributes_match(s, unit_of_measurement="°C", device_class="temperature")
    log("a script's reading shows up in HA with its unit")
    mqtt_publish.single(topic, "", retain=True, hostname="127.0.0.1", port=args.broker_port)
    ha.wait("sensor.cellar_temperature to be removed", 30, lambda: ha.state("sensor.cellar_temperature") is None)
    log("cleared on the bus: the entity is removed from HA")


def discovery_configs(args):
    """The retained discovery configs pvbus announced: node id -> payload."""
    configs = {}

    def on_message(_client, _userdata, msg):
        if msg.payload:
            configs[msg.topic] = json.loads(msg.payload)

    client = mqtt_client.Client(mqtt_client.CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect("127.0.0.1", args.broker_port)
    client.subscribe("homeassistant/device/+/config", qos=1)
    client.loop_start()
    time.sleep(1.5)
    client.loop_stop()
    client.disconnect()
    return {t: c for t, c in configs.items() if c.get("origin", {}).get("name") == "pvbus"}


def check_entity_ids(ha, args):
    """Every component is in HA under the default_entity_id pvbus computed for it."""
    configs = discovery_configs(args)
    if not configs:
        raise Failure("no pvbus discovery config on the broker")
    count = 0
    for topic, config in sorted(configs.items()):
        for key, component in config["components"].items():
            entity_id = component["default_entity_id"]
            try:
                ha.wait(entity_id, 30, lambda: ha.state(entity_id) is not None)
            except Failure:
                raise Failure(
                    f"{topic} component {key}: no {entity_id} in HA; HA has "
                    + ", ".join(sorted(s["entity_id"] for s in ha.request("GET", "/api/states")
                                       if s["entity_id"].startswith(entity_id.split(".")[0] + ".")))
                ) from None
            count += 1
    log(f"all {count} entities of {len(configs)} devices are where pvbus said (default_entity_id)")
    for entity_id in args.expect_entity:
        if ha.state(entity_id) is None:
            raise Failure(f"{entity_id} is not in HA")
    if args.expect_entity:
        log(f"found {', '.join(args.expect_entity)}")


def check_unnamed_code(ha, args):
    """A code the vedirect crate does not name stays a number; HA shows it, never errs."""
    topic = "pvbus/script/charger2/state"
    entity = "sensor.charger2_charger_error"
    pub = lambda payload: mqtt_publish.single(topic, payload, retain=True, hostname="127.0.0.1", port=args.broker_port)
    pub(json.dumps({"ts": int(time.time()), "error": "no_error"}))
    s = ha.wait_state(entity, lambda s: s["state"] == "no_error", 30)
    attributes_match(s, device_class="enum")
    if "99" in s["attributes"]["options"]:
        raise Failure(f"99 is already an option: {s['attributes']['options']}")
    pub(json.dumps({"ts": int(time.time()), "error": 99}))
    # Not an option yet: unknown, not an error; pvbus announces it as one more option.
    s = ha.wait_state(entity, lambda s: "99" in s["attributes"].get("options", []), 30)
    if s["state"] not in ("unknown", "99") or "no_error" not in s["attributes"]["options"]:
        raise Failure(f"after an unnamed code: {s}")
    # HA keeps its subscription when a config changes, so the value shows with the
    # device's next state (a VE.Direct device sends one every second).
    pub(json.dumps({"ts": int(time.time()), "error": 99}))
    ha.wait_state(entity, lambda s: s["state"] == "99", 30)
    log("an unnamed error code (99): unknown, announced as one more option, then shown as 99")
    pub("")
    ha.wait(f"{entity} to be removed", 30, lambda: ha.state(entity) is None)


def check_panel(ha, args):
    # A TM1638 button with no relay behind it (the demo has two relays): an event only.
    button = "event.tm1638_button_8"
    before = ha.wait_state(button, lambda s: s["state"] != "unavailable", 30)["state"]
    mqtt_publish.single("pvbus/tm1638/sim/press", "8", hostname="127.0.0.1", port=args.broker_port)
    s = ha.wait_state(button, lambda s: s["state"] not in (before, "unavailable", "unknown"), 30)
    attributes_match(s, event_type="press", device_class="button")
    log(f"a press of TM1638 button 8 is an event in HA ({s['state']})")
    # An LCD line held from HA, then released.
    line = "text.lcd_line_1"
    shown = ha.wait_state(line, lambda s: s["state"] not in ("unknown", "unavailable", ""), 30)["state"]
    ha.request("POST", "/api/services/text/set_value", {"entity_id": line, "value": "Hello from HA"})
    ha.wait_state(line, lambda s: s["state"] == "Hello from HA", 30)
    ha.request("POST", "/api/services/text/set_value", {"entity_id": line, "value": ""})
    s = ha.wait_state(line, lambda s: s["state"] not in ("Hello from HA", "", "unknown", "unavailable"), 30)
    log(f"LCD line 1 held from HA, then released (was {shown!r}, now {s['state']!r})")
    number = "number.tm1638_brightness"
    ha.request("POST", "/api/services/number/set_value", {"entity_id": number, "value": 5})
    ha.wait_state(number, lambda s: is_number(s) and float(s["state"]) == 5, 30)
    ha.request("POST", "/api/services/number/set_value", {"entity_id": number, "value": 2})
    ha.wait_state(number, lambda s: is_number(s) and float(s["state"]) == 2, 30)
    log("TM1638 brightness set to 5 then back to 2 from HA")


def check_timed_override(ha, args):
    ha.request("POST", "/api/services/button/press", {"entity_id": f"button.{args.relay}_force_on_for_1h"})
    ha.wait_state(f"select.{args.relay}_mode", lambda s: s["state"] == "Forced on", 30)
    s = ha.wait_state(
        f"sensor.{args.relay}_override_ends",
        lambda s: s["state"] not in ("unknown", "unavailable"),
        30,
    )
    ends = datetime.fromisoformat(s["state"])
    left = (ends - datetime.now(timezone.utc)).total_seconds()
    if not 3000 < left <= 3600:
        raise Failure(f"override ends {s['state']}: {left:.0f}s from now, expected about 1 h")
    attributes_match(s, device_class="timestamp")
    log(f"'Force on for 1h' pressed: forced on, override ends in {left:.0f}s")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hass", required=True, help="the hass executable of the venv")
    p.add_argument("--config-dir", required=True, help="an empty directory for HA's configuration")
    p.add_argument("--broker-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--mppt", default="mppt_roof")
    p.add_argument("--bmv", default="bmv")
    p.add_argument("--relay", default="water_heater")
    p.add_argument("--rules", action="store_true", help="the rules run: check their entities; Auto lets them decide the output")
    p.add_argument("--panel", action="store_true", help="the simulated panel runs: check its entities")
    p.add_argument("--expect-entity", action="append", default=[], help="an entity id that must exist (e.g. from an accented name)")
    args = p.parse_args()
    auto_output = None if args.rules else "off"

    token = write_config(args.config_dir, args.broker_port, args.http_port)
    ha = HomeAssistant(args.hass, args.config_dir, args.http_port, token)
    try:
        ha.start()
        check_entities(ha, args)
        check_entity_ids(ha, args)
        check_availability(ha, args)
        check_unnamed_code(ha, args)
        if args.panel:
            check_panel(ha, args)
        check_script_device_comes_and_goes(ha, args)
        check_timed_override(ha, args)
        change_mode(ha, args, "Auto", auto_output)
        change_mode(ha, args, "Forced on", "on")
        print("MODE_CHANGED forced_on", flush=True)
        log("restarting Home Assistant")
        ha.stop()
        ha.start()
        check_entities(ha, args)
        if ha.state(f"select.{args.relay}_mode")["state"] != "Forced on":
            raise Failure("after the restart the mode select lost the relay's mode")
        change_mode(ha, args, "Auto", auto_output)
        errors = ha.discovery_errors()
        if errors:
            raise Failure("HA logged MQTT problems:\n" + "\n".join(errors))
        log("passed")
        return 0
    except Failure as e:
        print(f"FAILED: {e}\n--- tail of {ha.log_path} ---\n{ha.log_tail()}", flush=True)
        return 1
    finally:
        ha.stop()


if __name__ == "__main__":
    sys.exit(main())
