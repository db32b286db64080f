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

    fn strip_base<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic.strip_prefix(self.base.as_str())?.strip_prefix('/')
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new("pvbus")
    }
}

#[cfg(test)]
mod tests {
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
}
