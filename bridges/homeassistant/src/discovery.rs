//! Home Assistant device-based discovery payloads (HA 2024.11 and later): one retained
//! message per device on `<prefix>/device/<node_id>/config`, with `device`, `origin` and a
//! `components` map. Pure functions of the [`Inventory`]: the same bus gives the same
//! payloads, byte for byte, so re-announcing never makes HA rebuild an entity.
//!
//! The `state_topic` and `availability` (with `availability_mode: all`) shared by a
//! device's components are given once, at the device level, and only the components that
//! differ carry their own (HA's "shared options"): a VE.Direct entity is available only
//! while the `vedirect` process is online *and* that device's data is fresh; a rule
//! status only while `rules` is online. Relay modes are a `select` over the three choices people have (forced off,
//! auto, forced on) that publishes on `.../mode/set`, so HA goes through the same mode
//! model as a button or a script.

use std::collections::BTreeMap;

use pvbus_bus::Topics;
use pvbus_bus::contract::{OFFLINE, ONLINE};
use serde_json::{Map, Value, json};

use crate::config::{HomeAssistantConfig, LcdPanel, Tm1638Panel};
use crate::inventory::{DeviceSeen, Inventory};
use crate::readings::{self, Kind};

/// The `origin` name of every pvbus announcement: how a restarted process recognises
/// what it announced before.
pub const ORIGIN_NAME: &str = "pvbus";

/// The mode select's options, in the order HA shows them.
pub const MODE_OPTIONS: [&str; 3] = ["Forced off", "Auto", "Forced on"];

/// What the announcements are built from.
pub struct Context<'a> {
    pub config: &'a HomeAssistantConfig,
    pub topics: &'a Topics,
}

impl Context<'_> {
    /// `pvbus`, or `home_solar` for base `home/solar`: the prefix of every node id, so
    /// that two installations on one broker do not collide.
    pub fn base_key(&self) -> String {
        self.topics.base().replace('/', "_")
    }

    /// `<prefix>/device/<node_id>/config`.
    pub fn config_topic(&self, node_id: &str) -> String {
        format!("{}/device/{node_id}/config", self.config.discovery_prefix)
    }

    /// The node id in a discovery topic of ours, if it is one.
    pub fn parse_config_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic
            .strip_prefix(self.config.discovery_prefix.as_str())?
            .strip_prefix("/device/")?;
        let node = rest.strip_suffix("/config")?;
        let ours = node
            .strip_prefix(self.base_key().as_str())
            .is_some_and(|r| r.starts_with('_'));
        (ours && !node.contains('/')).then_some(node)
    }

    fn availability(&self, inv: &Inventory, process: &str, device: Option<(&str, &str)>) -> Value {
        let mut list = Vec::new();
        if inv.processes.contains(process) {
            list.push(available_when(self.topics.process_status(process)));
        }
        if let Some((bridge, dev)) = device
            && inv
                .availability
                .contains(&(bridge.to_string(), dev.to_string()))
        {
            list.push(available_when(self.topics.device_availability(bridge, dev)));
        }
        Value::Array(list)
    }
}

fn available_when(topic: String) -> Value {
    json!({"topic": topic, "payload_available": ONLINE, "payload_not_available": OFFLINE})
}

fn origin() -> Value {
    json!({
        "name": ORIGIN_NAME,
        "sw_version": env!("CARGO_PKG_VERSION"),
        "support_url": "https://example.invalid/pvbus",
    })
}

/// Every announcement the inventory calls for: discovery topic → JSON payload.
pub fn announcements(ctx: &Context<'_>, inv: &Inventory) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |node: String, payload: Value| {
        out.insert(ctx.config_topic(&node), payload.to_string());
    };
    for ((bridge, device), seen) in &inv.devices {
        let (node, payload) = device_config(ctx, inv, bridge, device, seen);
        put(node, payload);
    }
    for relay in &inv.relays {
        let (node, payload) = relay_config(ctx, inv, relay);
        put(node, payload);
    }
    if inv.site.is_some() || inv.surplus {
        let (node, payload) = site_config(ctx, inv);
        put(node, payload);
    }
    let panels = &ctx.config.panels;
    if let Some(panel) = &panels.tm1638
        && inv.processes.contains(TM1638)
    {
        let (node, payload) = tm1638_config(ctx, inv, panel);
        put(node, payload);
    }
    if let Some(panel) = &panels.lcd
        && inv.processes.contains(LCD)
    {
        let (node, payload) = lcd_config(ctx, inv, panel);
        put(node, payload);
    }
    out
}

const TM1638: &str = pvbus_panel::tm1638_process::PROCESS;
const LCD: &str = pvbus_panel::lcd_process::PROCESS;

/// The components of a panel, added one by one; they all share the panel process's
/// availability (given at the device level).
struct PanelComponents<'a> {
    node: String,
    device_name: &'a str,
    components: Map<String, Value>,
}

impl PanelComponents<'_> {
    fn add(&mut self, key: &str, platform: &str, name: &str, extra: Value) {
        let none = Value::Array(Vec::new());
        let unique = format!("{}_{key}", self.node);
        let mut c = component(platform, &unique, self.device_name, name, &none);
        if let Value::Object(extra) = extra {
            c.extend(extra);
        }
        self.components.insert(key.to_string(), Value::Object(c));
    }

    /// A button: an `event` entity fed by the panel's press messages
    /// (`{"event_type":"press","ts":…}`).
    fn button(&mut self, key: &str, name: &str, topic: String) {
        self.add(
            key,
            "event",
            name,
            json!({
                "state_topic": topic,
                "event_types": ["press"],
                "device_class": "button",
            }),
        );
    }

    fn payload(
        self,
        ctx: &Context<'_>,
        inv: &Inventory,
        process: &str,
        model: &str,
    ) -> (String, Value) {
        let payload = json!({
            "device": {
                "identifiers": [self.node],
                "name": self.device_name,
                "manufacturer": "pvbus",
                "model": model,
            },
            "origin": origin(),
            "qos": 1,
            "components": self.components,
        });
        let availability = ctx.availability(inv, process, None);
        (self.node, shared(payload, None, availability))
    }
}

/// A chain of TM1638 boards: its buttons as `event` entities, the digits as a `text`
/// (what they show; a text sent there replaces the relay modes, empty gives them back),
/// each LED as a `switch` (holds it; `auto` gives it back to its relay: an automation's
/// `mqtt.publish`), the brightness as a `number` and the display's on/off as a `switch`.
pub fn tm1638_config(ctx: &Context<'_>, inv: &Inventory, panel: &Tm1638Panel) -> (String, Value) {
    let t = ctx.topics;
    let item = |item: &str| t.panel_item(TM1638, item);
    let set = |item: &str| t.panel_item_set(TM1638, item);
    let mut p = PanelComponents {
        node: format!("{}_{TM1638}", ctx.base_key()),
        device_name: ctx.config.name_of(TM1638),
        components: Map::new(),
    };
    for n in 1..=panel.buttons {
        p.button(
            &format!("button_{n}"),
            &format!("Button {n}"),
            t.panel_button(TM1638, &n.to_string()),
        );
    }
    p.add(
        "display",
        "text",
        "Display",
        json!({
            "state_topic": item("display"),
            "command_topic": set("display"),
            // One character per digit, and a lit point as `.` after its digit.
            "max": panel.digits * 2,
            "min": 0,
            "retain": false,
            "icon": "mdi:numeric",
        }),
    );
    for n in 1..=panel.leds {
        let led = format!("led/{n}");
        p.add(
            &format!("led_{n}"),
            "switch",
            &format!("LED {n}"),
            json!({
                "state_topic": item(&led),
                "command_topic": set(&led),
                "payload_on": "ON",
                "payload_off": "OFF",
                "retain": false,
                "icon": "mdi:led-on",
            }),
        );
    }
    p.add(
        "brightness",
        "number",
        "Brightness",
        json!({
            "state_topic": item("brightness"),
            "command_topic": set("brightness"),
            "min": 0,
            "max": 7,
            "step": 1,
            "mode": "slider",
            // `off` (display off) is no level: unknown, as HA's `payload_reset`.
            "value_template": "{{ 'None' if value == 'off' else value }}",
            "retain": false,
            "entity_category": "config",
            "icon": "mdi:brightness-6",
        }),
    );
    p.add(
        "display_on",
        "switch",
        "Display on",
        json!({
            "state_topic": item("brightness"),
            "value_template": "{{ 'OFF' if value == 'off' else 'ON' }}",
            "state_on": "ON",
            "state_off": "OFF",
            "command_topic": set("brightness"),
            "payload_on": "on",
            "payload_off": "off",
            "retain": false,
            "entity_category": "config",
            "icon": "mdi:power",
        }),
    );
    p.payload(ctx, inv, TM1638, "TM1638 panel")
}

/// The LCD plate: each line as a `text` (what it shows; a text sent there holds the line
/// over every page, empty releases it), the backlight as a `select` (`auto` or a
/// colour; it shows the colour lit), the page as a `number`, and its five buttons as
/// `event` entities.
pub fn lcd_config(ctx: &Context<'_>, inv: &Inventory, panel: &LcdPanel) -> (String, Value) {
    use hd44780_mcp23017::{Button, Color, plate::COLUMNS, plate::ROWS};
    let t = ctx.topics;
    let item = |item: &str| t.panel_item(LCD, item);
    let set = |item: &str| t.panel_item_set(LCD, item);
    let mut p = PanelComponents {
        node: format!("{}_{LCD}", ctx.base_key()),
        device_name: ctx.config.name_of(LCD),
        components: Map::new(),
    };
    for n in 1..=ROWS {
        let line = format!("line/{n}");
        p.add(
            &format!("line_{n}"),
            "text",
            &format!("Line {n}"),
            json!({
                "state_topic": item(&line),
                "command_topic": set(&line),
                "max": COLUMNS,
                "min": 0,
                "retain": false,
                "icon": "mdi:card-text-outline",
            }),
        );
    }
    let mut colours = vec!["auto"];
    colours.extend(Color::ALL.map(Color::name));
    p.add(
        "backlight",
        "select",
        "Backlight",
        json!({
            "state_topic": item("backlight"),
            "command_topic": set("backlight"),
            "options": colours,
            "retain": false,
            "icon": "mdi:palette",
        }),
    );
    p.add(
        "page",
        "number",
        "Page",
        json!({
            "state_topic": item("page"),
            "command_topic": set("page"),
            "min": 1,
            "max": panel.pages.max(1),
            "step": 1,
            "mode": "box",
            "retain": false,
            "icon": "mdi:book-open-page-variant",
        }),
    );
    for button in Button::ALL {
        p.button(
            &format!("button_{}", button.name()),
            &format!("Button {}", button.name()),
            t.panel_button(LCD, button.name()),
        );
    }
    p.payload(ctx, inv, LCD, "16x2 LCD plate")
}

/// Component config common to every entity.
///
/// `default_entity_id` is what HA itself derives from the device and entity names, so
/// entity ids are the same on HA versions that ignore it (before 2025.10) and on those
/// that use it.
fn component(
    platform: &str,
    unique_id: &str,
    device_name: &str,
    name: &str,
    availability: &Value,
) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("platform".into(), platform.into());
    c.insert("unique_id".into(), unique_id.into());
    c.insert(
        "default_entity_id".into(),
        format!("{platform}.{}", slugify(&format!("{device_name} {name}"))).into(),
    );
    c.insert("name".into(), name.into());
    if availability.as_array().is_some_and(|a| !a.is_empty()) {
        c.insert("availability".into(), availability.clone());
        c.insert("availability_mode".into(), "all".into());
    }
    c
}

/// The components of one JSON state object (a device or the site).
///
/// They share the device's `state_topic` and `availability` (see [`shared`]).
fn reading_components(node: &str, device_name: &str, seen: &DeviceSeen) -> Map<String, Value> {
    let inherit = Value::Array(Vec::new());
    let availability = &inherit;
    let mut components = Map::new();
    for (name, kind) in &seen.readings {
        let row = readings::lookup(name);
        let label = row
            .map(|r| r.label.to_string())
            .unwrap_or_else(|| readings::label_from_name(name));
        let unique = format!("{node}_{name}");
        let mut c = match kind {
            Kind::Hidden | Kind::Identity => continue,
            Kind::Binary => {
                let mut c = component("binary_sensor", &unique, device_name, &label, availability);
                c.insert(
                    "value_template".into(),
                    from_json(&format!("'ON' if value_json.{name} else 'OFF'")).into(),
                );
                c
            }
            Kind::Sensor => {
                let mut c = component("sensor", &unique, device_name, &label, availability);
                c.insert(
                    "value_template".into(),
                    from_json(&format!("value_json.{name}")).into(),
                );
                c
            }
            Kind::List => {
                let mut c = component("sensor", &unique, device_name, &label, availability);
                c.insert(
                    "value_template".into(),
                    from_json(&format!(
                        "(value_json.{name} if value_json.{name} is string \
                         else value_json.{name} | join(', ')) or 'none'"
                    ))
                    .into(),
                );
                c
            }
            Kind::Enum(table) => {
                let mut c = component("sensor", &unique, device_name, &label, availability);
                let mut all: Vec<String> =
                    vedirect::decode::names(table).map(String::from).collect();
                if let Some(extra) = seen.extra_options.get(name) {
                    all.extend(extra.iter().cloned());
                }
                c.insert("device_class".into(), "enum".into());
                c.insert("value_template".into(), enum_template(name, &all).into());
                c.insert("options".into(), json!(all));
                c
            }
        };
        if let Some(r) = row {
            if let Some(dc) = r.device_class {
                c.insert("device_class".into(), dc.into());
            }
            if let Some(u) = r.unit {
                c.insert("unit_of_measurement".into(), u.into());
            }
            if let Some(sc) = r.state_class {
                c.insert("state_class".into(), sc.as_str().into());
            }
            if let Some(p) = r.precision {
                c.insert("suggested_display_precision".into(), p.into());
            }
            if r.diagnostic {
                c.insert("entity_category".into(), "diagnostic".into());
            }
        }
        components.insert(name.clone(), Value::Object(c));
    }
    if seen.readings.contains_key("ts") {
        let mut c = component(
            "sensor",
            &format!("{node}_last_reading"),
            device_name,
            "Last reading",
            availability,
        );
        c.insert("device_class".into(), "timestamp".into());
        c.insert("entity_category".into(), "diagnostic".into());
        c.insert(
            "value_template".into(),
            from_json("value_json.ts | int | timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false)")
                .into(),
        );
        components.insert("last_reading".into(), Value::Object(c));
    }
    components
}

/// A device of a bridge (or a script): its readings, and its identity when it gives one.
pub fn device_config(
    ctx: &Context<'_>,
    inv: &Inventory,
    bridge: &str,
    device: &str,
    seen: &DeviceSeen,
) -> (String, Value) {
    let node = format!("{}_{bridge}_{device}", ctx.base_key());
    let availability = ctx.availability(inv, bridge, Some((bridge, device)));
    let components = reading_components(&node, ctx.config.name_of(device), seen);
    let mut dev = Map::new();
    dev.insert("identifiers".into(), json!([node]));
    dev.insert("name".into(), ctx.config.name_of(device).into());
    let id = &seen.identity;
    if bridge == "vedirect" {
        dev.insert("manufacturer".into(), "Victron Energy".into());
    }
    if let Some(m) = &id.model {
        dev.insert("model".into(), m.clone().into());
    }
    if let Some(p) = &id.product_id {
        dev.insert("model_id".into(), p.clone().into());
    }
    if let Some(s) = &id.serial_number {
        dev.insert("serial_number".into(), s.clone().into());
    }
    if let Some(f) = &id.firmware {
        dev.insert("sw_version".into(), f.clone().into());
    }
    let payload = json!({
        "device": dev,
        "origin": origin(),
        "qos": 1,
        "components": components,
    });
    (
        node,
        shared(
            payload,
            Some(ctx.topics.device_state(bridge, device)),
            availability,
        ),
    )
}

/// Adds the options every component of the payload inherits unless it has its own.
fn shared(mut payload: Value, state_topic: Option<String>, availability: Value) -> Value {
    if let Some(topic) = state_topic {
        payload["state_topic"] = topic.into();
    }
    if availability.as_array().is_some_and(|a| !a.is_empty()) {
        payload["availability"] = availability;
        payload["availability_mode"] = "all".into();
    }
    payload
}

/// A relay: its mode as a select, its output, why it is as it is, today's on-time,
/// the running override and buttons to start one, and its rule's status.
pub fn relay_config(ctx: &Context<'_>, inv: &Inventory, relay: &str) -> (String, Value) {
    let t = ctx.topics;
    let node = format!("{}_relays_{relay}", ctx.base_key());
    let relays_availability = ctx.availability(inv, "relays", None);
    let availability = Value::Array(Vec::new()); // inherited from the device
    let device_name = ctx.config.name_of(relay);
    let mut components = Map::new();
    let mut add = |key: &str, platform: &str, name: &str, avail: &Value, extra: Value| {
        let mut c = component(platform, &format!("{node}_{key}"), device_name, name, avail);
        if let Value::Object(extra) = extra {
            c.extend(extra);
        }
        components.insert(key.to_string(), Value::Object(c));
    };
    add(
        "mode",
        "select",
        "Mode",
        &availability,
        json!({
            "state_topic": t.relay_mode(relay),
            "command_topic": t.relay_mode_set(relay),
            "options": MODE_OPTIONS,
            "value_template": "{{ {'forced_off': 'Forced off', 'auto_off': 'Auto', 'auto_on': 'Auto', 'forced_on': 'Forced on'}.get(value, value) }}",
            "command_template": "{{ {'Forced off': 'forced_off', 'Auto': 'auto', 'Forced on': 'forced_on'}[value] }}",
            "retain": false,
            "icon": "mdi:toggle-switch-variant",
        }),
    );
    add(
        "output",
        "binary_sensor",
        "Output",
        &availability,
        json!({
            "state_topic": t.relay_state(relay),
            "device_class": "power",
            "payload_on": "ON",
            "payload_off": "OFF",
        }),
    );
    add(
        "reason",
        "sensor",
        "Reason",
        &availability,
        json!({
            "state_topic": t.relay_reason(relay),
            "value_template": from_json("value_json.text | truncate(255, true)"),
            "json_attributes_topic": t.relay_reason(relay),
            "icon": "mdi:comment-question-outline",
        }),
    );
    add(
        "on_time_today",
        "sensor",
        "On time today",
        &availability,
        json!({
            "state_topic": t.relay_stats(relay),
            "value_template": from_json("value_json.on_time_today"),
            "json_attributes_topic": t.relay_stats(relay),
            "device_class": "duration",
            "unit_of_measurement": "s",
            "suggested_display_precision": 0,
            "state_class": "total_increasing",
        }),
    );
    add(
        "override_ends",
        "sensor",
        "Override ends",
        &availability,
        json!({
            "state_topic": t.relay_override(relay),
            "value_template": from_json("value_json.until | int | timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false)"),
            "device_class": "timestamp",
            "icon": "mdi:timer-outline",
        }),
    );
    for duration in &ctx.config.override_durations {
        let key = slugify(&format!("force on for {}", duration.trim()));
        add(
            &key,
            "button",
            &format!("Force on for {}", duration.trim()),
            &availability,
            json!({
                "command_topic": t.relay_mode_set(relay),
                "payload_press": json!({"mode": "forced_on", "for": duration.trim()}).to_string(),
                "retain": false,
                "icon": "mdi:timer-play-outline",
            }),
        );
    }
    if inv.rules.contains(relay) {
        let rules_availability = ctx.availability(inv, "rules", None);
        add(
            "rule_status",
            "sensor",
            "Rule status",
            &rules_availability,
            json!({
                "state_topic": t.rule_status(relay),
                "value_template": "{{ value | truncate(255, true) }}",
                "icon": "mdi:script-text-outline",
            }),
        );
    }
    let payload = json!({
        "device": {
            "identifiers": [node],
            "name": ctx.config.name_of(relay),
            "manufacturer": "pvbus",
            "model": "Relay",
        },
        "origin": origin(),
        "qos": 1,
        "components": components,
    });
    (node, shared(payload, None, relays_availability))
}

/// The site: totals over every device, and the surplus estimate of the rules.
pub fn site_config(ctx: &Context<'_>, inv: &Inventory) -> (String, Value) {
    let node = format!("{}_site", ctx.base_key());
    // The site totals come from the VE.Direct bridge (docs/topics.md).
    let availability = ctx.availability(inv, "vedirect", None);
    let mut components = match &inv.site {
        Some(seen) => reading_components(&node, ctx.config.name_of("site"), seen),
        None => Map::new(),
    };
    if inv.surplus {
        let mut c = component(
            "sensor",
            &format!("{node}_surplus"),
            ctx.config.name_of("site"),
            "Surplus",
            &ctx.availability(inv, "rules", None),
        );
        c.extend(
            json!({
                "state_topic": ctx.topics.site_surplus(),
                "value_template": from_json("value_json.surplus"),
                "json_attributes_topic": ctx.topics.site_surplus(),
                "device_class": "power",
                "unit_of_measurement": "W",
                "state_class": "measurement",
                "suggested_display_precision": 0,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        components.insert("surplus".into(), Value::Object(c));
    }
    let payload = json!({
        "device": {
            "identifiers": [node],
            "name": ctx.config.name_of("site"),
            "manufacturer": "pvbus",
            "model": "Site totals",
        },
        "origin": origin(),
        "qos": 1,
        "components": components,
    });
    let state_topic = inv.site.is_some().then(|| ctx.topics.site_state());
    (node, shared(payload, state_topic, availability))
}

/// A template over a JSON payload that renders `None` (HA's "unknown") when the payload
/// is not JSON, e.g. the empty payload of a cleared retained topic, instead of logging
/// a template error.
fn from_json(expr: &str) -> String {
    format!("{{% if value_json is defined %}}{{{{ {expr} }}}}{{% else %}}None{{% endif %}}")
}

/// The state of an `enum` sensor: the reading when it is one of `options`, else `None`
/// (HA's "unknown"). HA refuses a state that is not an option (it logs a warning and keeps
/// the old state); a value it has not been told of yet (a code the vedirect crate does
/// not name, seen for the first time) thus shows as unknown until the config announced
/// again with that value as one more option has reached HA, and the device's next state
/// has (HA keeps its subscription across a config update: no retained replay).
fn enum_template(name: &str, options: &[String]) -> String {
    let list = serde_json::to_string(options).expect("strings serialise");
    format!(
        "{{% if value_json is defined %}}{{% set v = value_json.{name} | string %}}\
         {{{{ v if v in {list} else None }}}}{{% else %}}None{{% endif %}}"
    )
}

/// HA's `slugify` (python-slugify, which it uses to make entity ids from names), for
/// names in Latin scripts: `Chauffe-eau de l'étang` → `chauffe_eau_de_l_etang`.
///
/// Same steps as python-slugify: an ASCII apostrophe separates words; every other
/// character becomes ASCII as unidecode writes it (`é` → `e`, `œ` → `oe`, `ß` → `ss`,
/// `°` → `deg`, `’` → `'`, `€` → `EUR`); lower case; the apostrophes that transliteration
/// gave vanish (`l’étang` → `letang`); a comma between digits vanishes (`1,5` → `15`);
/// every run of anything but `a-z0-9` is one `_`, none at either end; nothing left is
/// `unknown`. Characters beyond Latin-1 and Latin Extended-A (and a few typographic
/// ones) have no transliteration here and separate words: HA would transliterate Greek
/// or Cyrillic names, so give such devices a Latin name in `[homeassistant.names]`.
pub fn slugify(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\'' => ascii.push('-'),
            c if c.is_ascii() => ascii.push(c),
            c => ascii.push_str(transliterate(c).unwrap_or(" ")),
        }
    }
    let ascii = ascii.to_ascii_lowercase().replace('\'', "");
    let bytes = ascii.as_bytes();
    let digit_at = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(u8::is_ascii_digit);
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b',' && digit_at(i.checked_sub(1)) && digit_at(Some(i + 1)) {
            continue;
        }
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    match out.trim_matches('_') {
        "" => "unknown".to_string(),
        slug => slug.to_string(),
    }
}

/// What unidecode (after NFKD, as python-slugify does) makes of a non-ASCII character,
/// for the ones pvbus knows: Latin-1, Latin Extended-A, quotes, dashes, `…`, `€`.
fn transliterate(c: char) -> Option<&'static str> {
    let cp = u32::from(c);
    Some(match cp {
        0xA0..=0x17F => LATIN[(cp - 0xA0) as usize],
        0x2018 | 0x2019 => "'",
        0x201A => ",",
        0x201C | 0x201D => "\"",
        0x201E => ",,",
        0x2013 => "-",
        0x2014 => "--",
        0x2022 => "*",
        0x2026 => "...",
        0x20AC => "EUR",
        _ => return None,
    })
}

/// U+00A0..U+017F as text_unidecode 1.3 (HA's) writes them after NFKD, eight a line.
#[rustfmt::skip]
const LATIN: [&str; 224] = [
    " ", "!", "C/", "PS", "$?", "Y=", "|", "SS",
    " ", "(c)", "a", "<<", "!", "", "(r)", " ",
    "deg", "+-", "2", "3", " ", "m", "P", "*",
    " ", "1", "o", ">>", "1/4", "1/2", "3/4", "?",
    "A", "A", "A", "A", "A", "A", "AE", "C",
    "E", "E", "E", "E", "I", "I", "I", "I",
    "D", "N", "O", "O", "O", "O", "O", "x",
    "O", "U", "U", "U", "U", "Y", "Th", "ss",
    "a", "a", "a", "a", "a", "a", "ae", "c",
    "e", "e", "e", "e", "i", "i", "i", "i",
    "d", "n", "o", "o", "o", "o", "o", "/",
    "o", "u", "u", "u", "u", "y", "th", "y",
    "A", "a", "A", "a", "A", "a", "C", "c",
    "C", "c", "C", "c", "C", "c", "D", "d",
    "D", "d", "E", "e", "E", "e", "E", "e",
    "E", "e", "E", "e", "G", "g", "G", "g",
    "G", "g", "G", "g", "H", "h", "H", "h",
    "I", "i", "I", "i", "I", "i", "I", "i",
    "I", "i", "IJ", "ij", "J", "j", "K", "k",
    "k", "L", "l", "L", "l", "L", "l", "L*",
    "l*", "L", "l", "N", "n", "N", "n", "N",
    "n", "'n", "ng", "NG", "O", "o", "O", "o",
    "O", "o", "OE", "oe", "R", "r", "R", "r",
    "R", "r", "S", "s", "S", "s", "S", "s",
    "S", "s", "T", "t", "T", "t", "T", "t",
    "U", "u", "U", "u", "U", "u", "U", "u",
    "U", "u", "U", "u", "W", "w", "Y", "y",
    "Y", "Z", "z", "Z", "z", "Z", "z", "s",
];

/// Whether a retained discovery payload was announced by pvbus.
pub fn is_ours(payload: &[u8]) -> bool {
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(payload) else {
        return false;
    };
    let origin = o.get("origin").or_else(|| o.get("o"));
    origin.and_then(|o| o.get("name")).and_then(Value::as_str) == Some(ORIGIN_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(messages: &[(&str, &str)]) -> Inventory {
        let mut inv = Inventory::default();
        for (topic, payload) in messages {
            inv.observe(&Topics::default(), topic, payload.as_bytes());
        }
        inv
    }

    #[test]
    fn a_charger_with_identity_and_double_availability() {
        let config = HomeAssistantConfig::default();
        let topics = Topics::default();
        let ctx = Context {
            config: &config,
            topics: &topics,
        };
        let inv = inventory(&[
            ("pvbus/vedirect/status", "online"),
            ("pvbus/vedirect/mppt/availability", "online"),
            (
                "pvbus/vedirect/mppt/state",
                r#"{"ts":1,"pv_power":240,"yield_today":1.5,"charge_state":"bulk","model":"SmartSolar MPPT 100|20","product_id":"0xA060","serial_number":"HQ1","firmware":"1.61","cellar_fan":true}"#,
            ),
        ]);
        let all = announcements(&ctx, &inv);
        let payload: Value =
            serde_json::from_str(&all["homeassistant/device/pvbus_vedirect_mppt/config"]).unwrap();
        assert_eq!(payload["device"]["manufacturer"], "Victron Energy");
        assert_eq!(payload["device"]["model"], "SmartSolar MPPT 100|20");
        assert_eq!(payload["device"]["model_id"], "0xA060");
        assert_eq!(payload["device"]["serial_number"], "HQ1");
        assert_eq!(payload["device"]["sw_version"], "1.61");
        let c = &payload["components"];
        assert_eq!(c["pv_power"]["unit_of_measurement"], "W");
        assert_eq!(c["yield_today"]["state_class"], "total_increasing");
        assert_eq!(c["charge_state"]["device_class"], "enum");
        assert_eq!(c["cellar_fan"]["platform"], "binary_sensor");
        assert_eq!(c["pv_power"]["default_entity_id"], "sensor.mppt_pv_power");
        assert_eq!(
            c["cellar_fan"]["default_entity_id"],
            "binary_sensor.mppt_cellar_fan"
        );
        assert_eq!(
            slugify("Roof charger  Battery 2 voltage"),
            "roof_charger_battery_2_voltage"
        );
        assert!(c.get("model").is_none() && c.get("serial_number").is_none());
        assert!(
            c["pv_power"].get("availability").is_none(),
            "shared, at the device level"
        );
        assert_eq!(payload["state_topic"], "pvbus/vedirect/mppt/state");
        let avail = payload["availability"].as_array().unwrap();
        let topics: Vec<_> = avail.iter().map(|a| a["topic"].as_str().unwrap()).collect();
        assert_eq!(
            topics,
            ["pvbus/vedirect/status", "pvbus/vedirect/mppt/availability"]
        );
        assert_eq!(payload["availability_mode"], "all");
    }

    #[test]
    fn relays_offer_the_three_choices_and_the_override_buttons() {
        let config = HomeAssistantConfig::default();
        let topics = Topics::new("home/solar");
        let ctx = Context {
            config: &config,
            topics: &topics,
        };
        let mut inv = Inventory::default();
        inv.observe(&topics, "home/solar/relays/pump/mode", b"auto_on");
        let (node, p) = relay_config(&ctx, &inv, "pump");
        assert_eq!(node, "home_solar_relays_pump");
        let c = &p["components"];
        assert_eq!(c["mode"]["options"], json!(MODE_OPTIONS));
        assert_eq!(
            c["mode"]["command_topic"],
            "home/solar/relays/pump/mode/set"
        );
        assert_eq!(
            c["force_on_for_2h"]["default_entity_id"],
            "button.pump_force_on_for_2h"
        );
        assert_eq!(
            c["force_on_for_2h"]["payload_press"],
            r#"{"for":"2h","mode":"forced_on"}"#
        );
        assert!(
            c.get("rule_status").is_none(),
            "no rule status without rules"
        );
        assert_eq!(
            ctx.parse_config_topic("homeassistant/device/home_solar_relays_pump/config"),
            Some("home_solar_relays_pump")
        );
        assert_eq!(
            ctx.parse_config_topic("homeassistant/device/pvbus_relays_pump/config"),
            None
        );
    }

    /// Expected values are what HA 2025.4's `homeassistant.util.slugify` returns (run in
    /// the venv of tests/ha/setup.sh).
    #[test]
    fn slugify_transliterates_like_home_assistant() {
        for (name, slug) in [
            ("élec", "elec"),
            ("Pompe à eau Mode", "pompe_a_eau_mode"),
            ("Chauffe-eau de l'étang Mode", "chauffe_eau_de_l_etang_mode"),
            ("Chauffe-eau de l’étang Mode", "chauffe_eau_de_letang_mode"),
            ("Œuvre Façade Sœur", "oeuvre_facade_soeur"),
            ("Straße Größe", "strasse_grosse"),
            ("Température °C", "temperature_degc"),
            ("Ça coûte 1,5 €", "ca_coute_15_eur"),
            ("  ÉLÈVE -- naïf__ ", "eleve_naif"),
            (
                "Roof charger  Battery 2 voltage",
                "roof_charger_battery_2_voltage",
            ),
            ("Ølhus Ærø", "olhus_aero"),
            ("Ĳssel Ŀl", "ijssel_l_l"),
            ("«Serre» n°2", "serre_ndeg2"),
            ("...", "unknown"),
            ("", ""),
        ] {
            assert_eq!(slugify(name), slug, "{name:?}");
        }
    }

    #[test]
    fn an_enum_shows_only_its_options() {
        let config = HomeAssistantConfig::default();
        let topics = Topics::default();
        let ctx = Context {
            config: &config,
            topics: &topics,
        };
        let inv = inventory(&[(
            "pvbus/vedirect/mppt/state",
            r#"{"ts":1,"error":"no_error","tracker_mode":7,"device_mode":"on","dc_monitor_mode":"fridge"}"#,
        )]);
        let (_, p) = device_config(
            &ctx,
            &inv,
            "vedirect",
            "mppt",
            &inv.devices[&("vedirect".into(), "mppt".into())],
        );
        let c = &p["components"];
        for name in ["error", "tracker_mode", "device_mode", "dc_monitor_mode"] {
            assert_eq!(c[name]["device_class"], "enum", "{name}");
            assert_eq!(c[name]["entity_category"], "diagnostic", "{name}");
        }
        let options = |name: &str| -> Vec<String> {
            serde_json::from_value(c[name]["options"].clone()).unwrap()
        };
        let errors: Vec<String> = vedirect::decode::names(vedirect::decode::ERRORS)
            .map(String::from)
            .collect();
        assert_eq!(options("error"), errors, "every name of the vedirect table");
        // The code 7 is no tracker mode the vedirect crate names: one more option.
        assert_eq!(
            options("tracker_mode"),
            ["off", "voltage_or_current_limited", "mppt_active", "7"]
        );
        let template = c["tracker_mode"]["value_template"].as_str().unwrap();
        assert!(
            template.contains(r#"value_json.tracker_mode | string"#)
                && template.contains(r#"["off","voltage_or_current_limited","mppt_active","7"]"#)
                && template.contains("else None"),
            "{template}"
        );
    }

    #[test]
    fn panels_only_when_configured_and_on_the_bus() {
        let mut config = HomeAssistantConfig::default();
        let topics = Topics::default();
        let tm1638 = "homeassistant/device/pvbus_tm1638/config";
        let lcd = "homeassistant/device/pvbus_lcd/config";
        let on_bus = inventory(&[
            ("pvbus/tm1638/status", "online"),
            ("pvbus/lcd/status", "offline"),
        ]);
        let ctx = Context {
            config: &config,
            topics: &topics,
        };
        let all = announcements(&ctx, &on_bus);
        assert!(
            !all.contains_key(tm1638) && !all.contains_key(lcd),
            "not configured"
        );
        config.panels.tm1638 = Some(Tm1638Panel {
            buttons: 16,
            leds: 8,
            digits: 8,
        });
        config.panels.lcd = Some(LcdPanel { pages: 3 });
        let ctx = Context {
            config: &config,
            topics: &topics,
        };
        assert!(
            announcements(&ctx, &Inventory::default()).is_empty(),
            "never on the bus"
        );
        let all = announcements(&ctx, &on_bus);
        let p: Value = serde_json::from_str(&all[tm1638]).unwrap();
        let c = p["components"].as_object().unwrap();
        assert_eq!(c.values().filter(|c| c["platform"] == "event").count(), 16);
        assert_eq!(
            c.values().filter(|c| c["platform"] == "switch").count(),
            8 + 1,
            "8 LEDs and the display's on/off"
        );
        assert_eq!(c["button_16"]["state_topic"], "pvbus/tm1638/button/16");
        assert_eq!(
            c["button_16"]["default_entity_id"],
            "event.tm1638_button_16"
        );
        assert_eq!(c["led_3"]["command_topic"], "pvbus/tm1638/led/3/set");
        assert_eq!(c["display"]["max"], 16);
        assert_eq!(p["availability"][0]["topic"], "pvbus/tm1638/status");
        let p: Value = serde_json::from_str(&all[lcd]).unwrap();
        let c = &p["components"];
        assert_eq!(c["line_2"]["command_topic"], "pvbus/lcd/line/2/set");
        assert_eq!(c["line_2"]["max"], 16);
        assert_eq!(c["page"]["max"], 3);
        assert_eq!(
            c["backlight"]["options"],
            json!([
                "auto", "off", "red", "green", "blue", "yellow", "teal", "violet", "white"
            ])
        );
        assert_eq!(c["button_select"]["state_topic"], "pvbus/lcd/button/select");
        assert_eq!(
            c["button_left"]["default_entity_id"],
            "event.lcd_button_left"
        );
    }

    #[test]
    fn the_origin_marks_our_payloads() {
        assert!(is_ours(br#"{"origin":{"name":"pvbus"}}"#));
        assert!(is_ours(br#"{"o":{"name":"pvbus"}}"#));
        assert!(!is_ours(br#"{"origin":{"name":"zigbee2mqtt"}}"#));
        assert!(!is_ours(b"garbage"));
    }
}
