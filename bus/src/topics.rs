//! The topic contract: every topic of pvbus is named here, and `docs/topics.md` describes
//! the same list for people. Processes never format topic strings themselves, so the
//! contract cannot drift between a publisher and its subscribers.

/// Topic names under one base prefix (default `pvbus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

/// A relay command topic, recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCommand {
    /// `.../mode/set`: people, Home Assistant, buttons.
    ModeSet,
    /// `.../auto/set`: rules.
    AutoSet,
}

impl Topics {
    pub fn new(base: impl Into<String>) -> Topics {
        let base = base.into();
        let base = base.trim_end_matches('/').to_string();
        Topics { base }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Everything of this installation: `<base>/#`.
    pub fn all(&self) -> String {
        format!("{}/#", self.base)
    }

    // --- processes -------------------------------------------------------------------

    /// `<base>/<process>/status`: `online`/`offline`, retained, the last will.
    pub fn process_status(&self, process: &str) -> String {
        format!("{}/{process}/status", self.base)
    }

    /// Every process status: `<base>/+/status`.
    pub fn process_status_filter(&self) -> String {
        format!("{}/+/status", self.base)
    }

    /// `<base>/<process>/error`: answers to invalid commands, not retained.
    pub fn process_error(&self, process: &str) -> String {
        format!("{}/{process}/error", self.base)
    }

    // --- devices -----------------------------------------------------------------------

    /// `<base>/<bridge>/<device>/state`: one retained JSON object per device.
    pub fn device_state(&self, bridge: &str, device: &str) -> String {
        format!("{}/{bridge}/{device}/state", self.base)
    }

    /// `<base>/<bridge>/<device>/availability`: `online`/`offline`, retained.
    pub fn device_availability(&self, bridge: &str, device: &str) -> String {
        format!("{}/{bridge}/{device}/availability", self.base)
    }

    /// Every device reading: `<base>/+/+/state`.
    pub fn device_state_filter(&self) -> String {
        format!("{}/+/+/state", self.base)
    }

    /// `(bridge, device)` of a device state topic.
    pub fn parse_device_state<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = self.strip_base(topic)?;
        let mut parts = rest.split('/');
        let (bridge, device, leaf) = (parts.next()?, parts.next()?, parts.next()?);
        (leaf == "state" && parts.next().is_none()).then_some((bridge, device))
    }

    // --- site --------------------------------------------------------------------------

    /// `<base>/site/state`: site totals (PV power over all chargers, battery power,
    /// consumption), retained.
    pub fn site_state(&self) -> String {
        format!("{}/site/state", self.base)
    }

    /// `<base>/site/surplus`: the surplus estimate, retained.
    pub fn site_surplus(&self) -> String {
        format!("{}/site/surplus", self.base)
    }

    // --- relays ------------------------------------------------------------------------

    pub fn relay_state(&self, id: &str) -> String {
        format!("{}/relays/{id}/state", self.base)
    }
    pub fn relay_mode(&self, id: &str) -> String {
        format!("{}/relays/{id}/mode", self.base)
    }
    pub fn relay_reason(&self, id: &str) -> String {
        format!("{}/relays/{id}/reason", self.base)
    }
    /// A running time-scoped override (JSON), or empty when none: retained.
    pub fn relay_override(&self, id: &str) -> String {
        format!("{}/relays/{id}/override", self.base)
    }
    /// Today's statistics (JSON): retained.
    pub fn relay_stats(&self, id: &str) -> String {
        format!("{}/relays/{id}/stats", self.base)
    }
    pub fn relay_mode_set(&self, id: &str) -> String {
        format!("{}/relays/{id}/mode/set", self.base)
    }
    pub fn relay_auto_set(&self, id: &str) -> String {
        format!("{}/relays/{id}/auto/set", self.base)
    }
    /// Both command topics of every relay.
    pub fn relay_command_filters(&self) -> [String; 2] {
        [
            format!("{}/relays/+/mode/set", self.base),
            format!("{}/relays/+/auto/set", self.base),
        ]
    }
    pub fn relay_state_filter(&self) -> String {
        format!("{}/relays/+/state", self.base)
    }
    pub fn relay_mode_filter(&self) -> String {
        format!("{}/relays/+/mode", self.base)
    }

    /// `(relay id, command)` of a relay command topic.
    pub fn parse_relay_command<'t>(&self, topic: &'t str) -> Option<(&'t str, RelayCommand)> {
        let rest = self.strip_base(topic)?.strip_prefix("relays/")?;
        let mut parts = rest.split('/');
        let (id, kind, set) = (parts.next()?, parts.next()?, parts.next()?);
        if set != "set" || parts.next().is_some() || id.is_empty() {
            return None;
        }
        match kind {
            "mode" => Some((id, RelayCommand::ModeSet)),
            "auto" => Some((id, RelayCommand::AutoSet)),
            _ => None,
        }
    }

    /// `(relay id, leaf)` of a relay topic such as `<base>/relays/pump/mode`.
    pub fn parse_relay_topic<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = self.strip_base(topic)?.strip_prefix("relays/")?;
        let (id, leaf) = rest.split_once('/')?;
        (!id.is_empty() && !leaf.contains('/')).then_some((id, leaf))
    }

    // --- rules -------------------------------------------------------------------------

    /// `<base>/rules/<relay>/status`: what the rule of that relay waits for, retained.
    pub fn rule_status(&self, relay: &str) -> String {
        format!("{}/rules/{relay}/status", self.base)
    }
    /// `<base>/rules/decisions`: one JSON per change, not retained.
    pub fn rule_decisions(&self) -> String {
        format!("{}/rules/decisions", self.base)
    }
    /// `<base>/rules/heartbeat`: unix ts, not retained; the relay bridge's safety watches it.
    pub fn rules_heartbeat(&self) -> String {
        format!("{}/rules/heartbeat", self.base)
    }

    // --- Home Assistant and shell commands (added for pvbus-homeassistant, pvbus-cli) ---

    /// Every device availability: `<base>/+/+/availability`.
    pub fn device_availability_filter(&self) -> String {
        format!("{}/+/+/availability", self.base)
    }

    /// `(bridge, device)` of a device availability topic.
    pub fn parse_device_availability<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = self.strip_base(topic)?;
        let mut parts = rest.split('/');
        let (bridge, device, leaf) = (parts.next()?, parts.next()?, parts.next()?);
        (leaf == "availability" && parts.next().is_none()).then_some((bridge, device))
    }

    /// `<process>` of a process status topic (`<base>/<process>/status`).
    pub fn parse_process_status<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let (process, leaf) = self.strip_base(topic)?.split_once('/')?;
        (leaf == "status" && !process.is_empty()).then_some(process)
    }

    /// Every rule status: `<base>/rules/+/status`.
    pub fn rule_status_filter(&self) -> String {
        format!("{}/rules/+/status", self.base)
    }

    /// The relay id of a rule status topic.
    pub fn parse_rule_status<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = self.strip_base(topic)?.strip_prefix("rules/")?;
        let (relay, leaf) = rest.split_once('/')?;
        (leaf == "status" && !relay.is_empty()).then_some(relay)
    }

    /// `<base>/<client>/sync`: a client publishes here (not retained) after subscribing,
    /// on a topic it is itself subscribed to. Brokers deliver in order, so when the
    /// message comes back every retained message of the earlier subscriptions has
    /// arrived: an event, instead of guessing how long the retained burst lasts.
    pub fn sync(&self, client: &str) -> String {
        format!("{}/{client}/sync", self.base)
    }

    // --- device settings (written by the VE.Direct bridge over HEX) --------------------

    /// `<base>/<bridge>/<device>/<setting>`: a device setting as the device confirmed it,
    /// retained (e.g. `pvbus/vedirect/mppt_roof/load_output` = `on`).
    pub fn device_setting(&self, bridge: &str, device: &str, setting: &str) -> String {
        format!("{}/{bridge}/{device}/{setting}", self.base)
    }

    /// `<base>/<bridge>/<device>/<setting>/set`: the command that changes it, never retained.
    pub fn device_setting_set(&self, bridge: &str, device: &str, setting: &str) -> String {
        format!("{}/{bridge}/{device}/{setting}/set", self.base)
    }

    /// Every setting command of one bridge: `<base>/<bridge>/+/+/set`.
    pub fn device_setting_set_filter(&self, bridge: &str) -> String {
        format!("{}/{bridge}/+/+/set", self.base)
    }

    /// `(device, setting)` of a setting command topic of `bridge`.
    pub fn parse_device_setting_set<'t>(
        &self,
        bridge: &str,
        topic: &'t str,
    ) -> Option<(&'t str, &'t str)> {
        let rest = self
            .strip_base(topic)?
            .strip_prefix(bridge)?
            .strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (device, setting, set) = (parts.next()?, parts.next()?, parts.next()?);
        (set == "set" && parts.next().is_none() && !device.is_empty() && !setting.is_empty())
            .then_some((device, setting))
    }

    /// `(device, setting)` of a setting's state topic of `bridge`
    /// (`<base>/<bridge>/<device>/<setting>`), for `setting` among `settings`.
    pub fn parse_device_setting<'t>(
        &self,
        bridge: &str,
        topic: &'t str,
        settings: &[&str],
    ) -> Option<(&'t str, &'t str)> {
        let rest = self
            .strip_base(topic)?
            .strip_prefix(bridge)?
            .strip_prefix('/')?;
        let (device, setting) = rest.split_once('/')?;
        (!device.is_empty() && settings.contains(&setting)).then_some((device, setting))
    }

    // --- supervisor (added by the supervisor's author, issue 2) ------------------------

    /// `<base>/supervisor/processes`: the children of `pvbus run` (pid, state, restarts,
    /// last exit) as one JSON object, retained.
    pub fn supervisor_processes(&self) -> String {
        format!("{}/supervisor/processes", self.base)
    }

    // --- local panel: `tm1638` and `lcd` (added by the panel's author, issue 7) --------

    /// `<base>/<panel>/<item>`: what a panel shows, retained (`tm1638/display`,
    /// `tm1638/led/3`, `lcd/line/1`, `lcd/backlight`, ...).
    pub fn panel_item(&self, panel: &str, item: &str) -> String {
        format!("{}/{panel}/{item}", self.base)
    }

    /// `<base>/<panel>/<item>/set`: the command that changes it, never retained.
    pub fn panel_item_set(&self, panel: &str, item: &str) -> String {
        format!("{}/{panel}/{item}/set", self.base)
    }

    /// Every command of one panel: `<base>/<panel>/+/set` and `<base>/<panel>/+/+/set`.
    pub fn panel_command_filters(&self, panel: &str) -> [String; 2] {
        [
            format!("{}/{panel}/+/set", self.base),
            format!("{}/{panel}/+/+/set", self.base),
        ]
    }

    /// The item of a panel command topic (`display`, `led/3`).
    pub fn parse_panel_command<'t>(&self, panel: &str, topic: &'t str) -> Option<&'t str> {
        let item = self
            .strip_base(topic)?
            .strip_prefix(panel)?
            .strip_prefix('/')?
            .strip_suffix("/set")?;
        (!item.is_empty() && !item.split('/').any(str::is_empty)).then_some(item)
    }

    /// `<base>/<panel>/button/<button>`: one event per press, not retained.
    pub fn panel_button(&self, panel: &str, button: &str) -> String {
        format!("{}/{panel}/button/{button}", self.base)
    }

    /// `<base>/<panel>/sim/press`: presses a button of the simulated panel; subscribed
    /// only when the panel runs on the sim backend.
    pub fn panel_sim_press(&self, panel: &str) -> String {
        format!("{}/{panel}/sim/press", self.base)
    }

    // --- plugins (added by the plugins' author, issue 8) ---------------------------------

    /// `<base>/plugins/<id>/health`: how `pvbus plugins` sees one plugin (state, pid,
    /// restarts, last exit, online, problem) as JSON, retained.
    pub fn plugin_health(&self, id: &str) -> String {
        format!("{}/plugins/{id}/health", self.base)
    }

    /// Every plugin's health: `<base>/plugins/+/health`.
    pub fn plugin_health_filter(&self) -> String {
        format!("{}/plugins/+/health", self.base)
    }

    // --- cloud bridge (added by the cloud bridge's author, issue 9) ---------------------

    /// `<base>/cloud/remote`: whether the link to the remote broker is up, and why not
    /// (JSON), retained.
    pub fn cloud_remote(&self) -> String {
        format!("{}/cloud/remote", self.base)
    }

    /// Whether `topic` is retained by the topic contract (docs/topics.md's "Retained"
    /// column): states, availability, statuses and settings are; commands (`.../set`),
    /// error answers, decisions, heartbeats, sync markers and button presses are not.
    /// A topic outside the base prefix is not ours: `false`.
    ///
    /// Needed because an MQTT 3.1.1 broker clears the retain flag on live delivery: a
    /// process that relays messages (the cloud bridge) cannot learn it from the message.
    /// Topics the contract does not list (a script's own device) count as state, the
    /// common case. A test checks this against every row of docs/topics.md.
    pub fn retained_by_contract(&self, topic: &str) -> bool {
        let Some(rest) = self.strip_base(topic) else {
            return false;
        };
        let levels: Vec<&str> = rest.split('/').collect();
        // Everything else is state: the events and commands are the exceptions.
        !matches!(
            levels.as_slice(),
            [.., "set"]
                | [_, "error" | "sync"]
                | ["rules", "decisions" | "heartbeat"]
                | ["tm1638" | "lcd", "button", _]
                | ["tm1638" | "lcd", "sim", "press"]
        )
    }

    /// A topic relative to the base prefix made absolute (`relays/pump/state` ->
    /// `pvbus/relays/pump/state`): dynamic-library plugins name topics relatively, so
    /// that they cannot write outside their installation.
    pub fn absolute(&self, relative: &str) -> String {
        format!("{}/{}", self.base, relative.trim_start_matches('/'))
    }

    /// The part of `topic` after the base prefix, if it is under it.
    pub fn relative<'t>(&self, topic: &'t str) -> Option<&'t str> {
        self.strip_base(topic)
    }

    fn strip_base<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic.strip_prefix(self.base.as_str())?.strip_prefix('/')
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new("pvbus")
    }
}

/// MQTT topic matching (3.1.1 §4.7): `+` one level, `#` this level and all below, and
/// wildcards at the first level never match topics starting with `$`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        match filter_level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    #[test]
    fn topic_matching_follows_mqtt() {
        assert!(topic_matches("pvbus/#", "pvbus/a/state"));
        assert!(topic_matches("pvbus/#", "pvbus"));
        assert!(topic_matches("pvbus/+/state", "pvbus/a/state"));
        assert!(!topic_matches("pvbus/+/state", "pvbus/a/b/state"));
        assert!(!topic_matches("pvbus/+", "pvbus"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/x", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(topic_matches("+/+", "/x"));
    }

    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let t = Topics::new("pvbus/");
        assert_eq!(t.process_status("relays"), "pvbus/relays/status");
        assert_eq!(
            t.device_state("vedirect", "bmv"),
            "pvbus/vedirect/bmv/state"
        );
        assert_eq!(t.relay_mode_set("pump"), "pvbus/relays/pump/mode/set");
        assert_eq!(t.rule_status("pump"), "pvbus/rules/pump/status");
    }

    #[test]
    fn commands_are_recognised_only_exactly() {
        let t = Topics::new("home/pv");
        assert_eq!(
            t.parse_relay_command("home/pv/relays/pump/mode/set"),
            Some(("pump", RelayCommand::ModeSet))
        );
        assert_eq!(
            t.parse_relay_command("home/pv/relays/pump/auto/set"),
            Some(("pump", RelayCommand::AutoSet))
        );
        for not in [
            "home/pv/relays/pump/mode",
            "home/pv/relays/pump/mode/set/x",
            "pvbus/relays/pump/mode/set",
            "home/pv/relays//mode/set",
            "home/pvx/relays/pump/mode/set",
        ] {
            assert_eq!(t.parse_relay_command(not), None, "{not}");
        }
    }

    #[test]
    fn device_setting_commands_parse() {
        let t = Topics::default();
        let set = t.device_setting_set("vedirect", "mppt", "load_output");
        assert_eq!(set, "pvbus/vedirect/mppt/load_output/set");
        assert_eq!(
            t.parse_device_setting_set("vedirect", &set),
            Some(("mppt", "load_output"))
        );
        assert_eq!(
            t.device_setting_set_filter("vedirect"),
            "pvbus/vedirect/+/+/set"
        );
        for not in [
            "pvbus/vedirect/mppt/load_output",
            "pvbus/vedirect/mppt/load_output/set/x",
            "pvbus/vedirectx/mppt/load_output/set",
            "pvbus/relays/mppt/load_output/set",
            "pvbus/vedirect//load_output/set",
        ] {
            assert_eq!(t.parse_device_setting_set("vedirect", not), None, "{not}");
        }
        let limit = ["charge_current_limit"];
        let state = t.device_setting("vedirect", "mppt", "charge_current_limit");
        assert_eq!(
            t.parse_device_setting("vedirect", &state, &limit),
            Some(("mppt", "charge_current_limit"))
        );
        for not in [
            "pvbus/vedirect/mppt/charge_current_limit/set",
            "pvbus/vedirect/mppt/load_output",
            "pvbus/vedirect/mppt/state",
            "pvbus/vedirectx/mppt/charge_current_limit",
            "pvbus/vedirect//charge_current_limit",
        ] {
            assert_eq!(
                t.parse_device_setting("vedirect", not, &limit),
                None,
                "{not}"
            );
        }
    }

    #[test]
    fn device_topics_parse() {
        let t = Topics::default();
        assert_eq!(
            t.parse_device_state("pvbus/vedirect/bmv/state"),
            Some(("vedirect", "bmv"))
        );
        assert_eq!(
            t.parse_device_state("pvbus/vedirect/bmv/availability"),
            None
        );
        assert_eq!(t.parse_device_state("pvbus/relays/pump/mode/set"), None);
    }

    // Local panel (pvbus-panel).
    #[test]
    fn panel_commands_parse() {
        let t = Topics::new("home/pv");
        assert_eq!(
            t.panel_item_set("tm1638", "led/3"),
            "home/pv/tm1638/led/3/set"
        );
        assert_eq!(
            t.parse_panel_command("tm1638", "home/pv/tm1638/led/3/set"),
            Some("led/3")
        );
        assert_eq!(
            t.parse_panel_command("lcd", "home/pv/lcd/page/set"),
            Some("page")
        );
        for not in [
            "home/pv/lcd/page",
            "home/pv/lcd/set",
            "home/pv/lcd//set",
            "home/pv/tm1638/page/set",
            "pvbus/lcd/page/set",
        ] {
            assert_eq!(t.parse_panel_command("lcd", not), None, "{not}");
        }
    }

    // Home Assistant and shell commands (pvbus-homeassistant, pvbus-cli).
    #[test]
    fn availability_status_and_rule_topics_parse() {
        let t = Topics::new("home/pv");
        assert_eq!(
            t.parse_device_availability("home/pv/vedirect/bmv/availability"),
            Some(("vedirect", "bmv"))
        );
        assert_eq!(
            t.parse_device_availability("home/pv/vedirect/bmv/state"),
            None
        );
        assert_eq!(
            t.parse_process_status("home/pv/relays/status"),
            Some("relays")
        );
        assert_eq!(t.parse_process_status("home/pv/rules/pump/status"), None);
        assert_eq!(
            t.parse_rule_status("home/pv/rules/pump/status"),
            Some("pump")
        );
        assert_eq!(t.parse_rule_status("home/pv/rules/status"), None);
        assert_eq!(t.sync("cli_1"), "home/pv/cli_1/sync");
    }

    // The cloud bridge: `retained_by_contract` against every row of docs/topics.md.
    #[test]
    fn retained_by_contract_agrees_with_every_row_of_the_topic_table() {
        let doc = include_str!("../../docs/topics.md");
        // A sample value for each placeholder of the table; a new placeholder must be
        // added here, so the test fails rather than skipping rows.
        let samples = [
            ("<process>", "relays"),
            ("<bridge>", "vedirect"),
            ("<device>", "mppt_roof"),
            ("<setting>", "load_output"),
            ("<id>", "pump"),
            ("<relay>", "pump"),
            ("<client>", "cli_1"),
            ("<n>", "3"),
            ("<name>", "select"),
        ];
        let t = Topics::default();
        let mut checked = 0;
        let mut retained_column = None;
        for line in doc.lines() {
            let line = line.trim();
            if !line.starts_with('|') {
                retained_column = None;
                continue;
            }
            // `\|` inside a cell is an escaped bar, not a column border.
            let cells: Vec<String> = line
                .replace("\\|", "\u{1}")
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            if let Some(i) = cells.iter().position(|c| c == "Retained") {
                retained_column = Some(i);
                continue;
            }
            let Some(column) = retained_column else {
                continue;
            };
            let expected = match cells.get(column).map(|c| c.trim_matches('*')) {
                Some("yes") => true,
                Some("no" | "never") => false,
                _ => continue, // the separator row, or "(HA's choice)"
            };
            for topic in cells[0].split('`').skip(1).step_by(2) {
                if !topic.starts_with("pvbus/") {
                    continue; // Home Assistant's own topics
                }
                let mut concrete = topic.to_string();
                for (placeholder, sample) in samples {
                    concrete = concrete.replace(placeholder, sample);
                }
                assert!(
                    !concrete.contains('<'),
                    "docs/topics.md: {topic}: a placeholder without a sample in this test"
                );
                assert_eq!(
                    t.retained_by_contract(&concrete),
                    expected,
                    "docs/topics.md says {topic} is {}retained",
                    if expected { "" } else { "not " }
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 45,
            "only {checked} rows read from docs/topics.md"
        );
        assert!(!t.retained_by_contract("other/relays/pump/state"));
        assert!(t.retained_by_contract("pvbus/script/cellar/state"));
    }
}
