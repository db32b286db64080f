//! Which message goes where, and when: the pure part of the bridge, with no I/O.
//!
//! - [`Router`] maps a local topic to its remote topic (or refuses it: commands never go
//!   out, our own `cloud/` topics neither) and a remote command topic to its local one
//!   (only those of the `accept` list);
//! - [`Outbox`] keeps the latest retained payload of every forwarded topic, to replay
//!   after each (re)connect, and holds back the topics that are not urgent (readings,
//!   totals, statistics) so that each is sent at most once per `state_interval`, the
//!   latest value winning.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use pvbus_bus::Topics;
use tokio::time::Instant;

/// Whether `topic` matches the MQTT topic filter `filter` (`+` one level, `#` the rest,
/// including the parent level itself).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for want in filter.split('/') {
        if want == "#" {
            return true;
        }
        match levels.next() {
            Some(level) if want == "+" || want == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// A local message on its way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub remote_topic: String,
    pub retain: bool,
    /// Not urgent (a reading, a total): sent at most once per `state_interval`.
    pub throttled: bool,
}

#[derive(Debug, Clone)]
pub struct Router {
    local: Topics,
    remote: Topics,
    forward: Vec<String>,
    accept: Vec<String>,
    throttle: bool,
}

impl Router {
    pub fn new(
        local_base: &str,
        remote_base: &str,
        forward: Vec<String>,
        accept: Vec<String>,
        throttle: bool,
    ) -> Router {
        Router {
            local: Topics::new(local_base),
            remote: Topics::new(remote_base),
            forward,
            accept,
            throttle,
        }
    }

    /// The local subscriptions: one per `forward` filter.
    pub fn local_filters(&self) -> Vec<String> {
        self.forward
            .iter()
            .map(|f| self.local.absolute(f))
            .collect()
    }

    /// The remote subscriptions: one per `accept` filter.
    pub fn remote_filters(&self) -> Vec<String> {
        self.accept
            .iter()
            .map(|f| self.remote.absolute(f))
            .collect()
    }

    /// `<remote_base>/cloud/status`: the link's availability on the remote.
    pub fn remote_status(&self) -> String {
        self.remote.process_status(crate::PROCESS)
    }

    /// Where a local message goes on the remote, or `None` when it stays here.
    /// `retained` is the flag it arrived with: set for a retained message replayed by the
    /// local broker; on live delivery a 3.1.1 broker clears it, so the topic contract
    /// decides too.
    pub fn outbound(&self, local_topic: &str, retained: bool) -> Option<Outbound> {
        let relative = self.local.relative(local_topic)?;
        let levels: Vec<&str> = relative.split('/').collect();
        // Commands flow only inwards: that is the security boundary, and what makes
        // loops impossible.
        if levels.last() == Some(&"set") {
            return None;
        }
        // Our own topics: the remote has its own `cloud/status`, written by the link.
        if levels.first() == Some(&crate::PROCESS) {
            return None;
        }
        if !self.forward.iter().any(|f| filter_matches(f, relative)) {
            return None;
        }
        let retain = retained || self.local.retained_by_contract(local_topic);
        Some(Outbound {
            remote_topic: self.remote.absolute(relative),
            retain,
            throttled: self.throttle && retain && !is_urgent(&self.local, local_topic),
        })
    }

    /// The local topic of a command received from the remote, or `None` if it is not
    /// one we accept.
    pub fn inbound(&self, remote_topic: &str) -> Option<String> {
        let relative = self.remote.relative(remote_topic)?;
        if !relative.ends_with("/set") || !self.accept.iter().any(|f| filter_matches(f, relative)) {
            return None;
        }
        Some(self.local.absolute(relative))
    }
}

/// What must reach a remote person at once: a relay's state, mode, reason and
/// override (the answer to their command), process statuses and device availability (a
/// fault). Every other retained topic (device readings, site totals, the rules' "waiting
/// for" lines that quote readings, statistics, the panel's mirror) is held back to one
/// per interval; one that changes rarely still goes at once, since only a second change
/// within the interval waits.
fn is_urgent(topics: &Topics, topic: &str) -> bool {
    let Some(relative) = topics.relative(topic) else {
        return true;
    };
    let levels: Vec<&str> = relative.split('/').collect();
    matches!(
        levels.as_slice(),
        ["relays", _, "state" | "mode" | "reason" | "override"]
            | [_, "status"]
            | [_, _, "availability"]
    )
}

#[derive(Debug)]
struct Entry {
    payload: Bytes,
    throttled: bool,
    last_sent: Option<Instant>,
    /// Changed since it was last sent.
    pending: bool,
}

/// The latest retained payload of every forwarded topic (remote names), and which of
/// them still have to go out.
#[derive(Debug)]
pub struct Outbox {
    interval: Duration,
    entries: BTreeMap<String, Entry>,
}

impl Outbox {
    pub fn new(interval: Duration) -> Outbox {
        Outbox {
            interval,
            entries: BTreeMap::new(),
        }
    }

    /// Records a retained value; returns whether it should be sent now (when connected):
    /// always for immediate topics, for a reading only if its topic has not been sent
    /// within the interval (else it waits for [`due`](Self::due), latest value winning).
    pub fn record(
        &mut self,
        remote_topic: &str,
        payload: Bytes,
        throttled: bool,
        now: Instant,
    ) -> bool {
        let entry = self
            .entries
            .entry(remote_topic.to_string())
            .or_insert(Entry {
                payload: Bytes::new(),
                throttled,
                last_sent: None,
                pending: false,
            });
        if entry.last_sent.is_some() && !entry.pending && entry.payload == payload {
            return false; // the same value again: nothing to tell the remote
        }
        entry.payload = payload;
        entry.throttled = throttled;
        let send_now = !throttled
            || entry
                .last_sent
                .is_none_or(|at| now.duration_since(at) >= self.interval);
        entry.pending = !send_now;
        send_now
    }

    /// Marks a topic as sent now (after a successful hand-over to the connection).
    pub fn sent(&mut self, remote_topic: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(remote_topic) {
            entry.last_sent = Some(now);
            entry.pending = false;
        }
    }

    /// When the next held-back reading is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.pending)
            .map(|e| e.last_sent.map_or(Instant::now(), |at| at + self.interval))
            .min()
    }

    /// The held-back readings whose interval has passed, marked as sent.
    pub fn due(&mut self, now: Instant) -> Vec<(String, Bytes)> {
        let interval = self.interval;
        let mut out = Vec::new();
        for (topic, entry) in &mut self.entries {
            if entry.pending
                && entry
                    .last_sent
                    .is_none_or(|at| now.duration_since(at) >= interval)
            {
                entry.pending = false;
                entry.last_sent = Some(now);
                out.push((topic.clone(), entry.payload.clone()));
            }
        }
        out
    }

    /// Every retained value, for a remote that may have lost them all (after a
    /// (re)connect); marked as sent.
    pub fn replay(&mut self, now: Instant) -> Vec<(String, Bytes)> {
        self.entries
            .iter_mut()
            .map(|(topic, entry)| {
                entry.pending = false;
                entry.last_sent = Some(now);
                (topic.clone(), entry.payload.clone())
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(
            "pvbus",
            "sites/cabin",
            vec!["#".into()],
            vec!["relays/+/mode/set".into()],
            true,
        )
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(filter_matches("#", "relays/pump/state"));
        assert!(filter_matches("relays/#", "relays"));
        assert!(filter_matches("relays/+/mode/set", "relays/pump/mode/set"));
        assert!(!filter_matches("relays/+/mode/set", "relays/pump/mode"));
        assert!(!filter_matches(
            "relays/+/mode/set",
            "relays/pump/mode/set/x"
        ));
        assert!(!filter_matches("relays/+", "relays/pump/mode"));
        assert!(filter_matches("+/+/state", "vedirect/mppt/state"));
    }

    #[test]
    fn commands_and_our_own_topics_never_go_out() {
        let r = router();
        for topic in [
            "pvbus/relays/pump/mode/set",
            "pvbus/relays/pump/auto/set",
            "pvbus/vedirect/mppt/load_output/set",
            "pvbus/cloud/remote",
            "pvbus/cloud/status",
            "other/relays/pump/state",
        ] {
            assert_eq!(r.outbound(topic, false), None, "{topic}");
        }
    }

    #[test]
    fn states_go_out_retained_by_the_contract_and_readings_are_throttled() {
        let r = router();
        let relay = r.outbound("pvbus/relays/pump/state", false).unwrap();
        assert_eq!(relay.remote_topic, "sites/cabin/relays/pump/state");
        assert!(relay.retain && !relay.throttled);
        let reading = r.outbound("pvbus/vedirect/mppt/state", false).unwrap();
        assert!(reading.retain && reading.throttled);
        assert!(r.outbound("pvbus/site/state", false).unwrap().throttled);
        assert!(
            r.outbound("pvbus/rules/pump/status", false)
                .unwrap()
                .throttled
        );
        let error = r.outbound("pvbus/relays/error", false).unwrap();
        assert!(!error.retain && !error.throttled);
        let availability = r
            .outbound("pvbus/vedirect/mppt/availability", false)
            .unwrap();
        assert!(availability.retain && !availability.throttled);
        // A script's retained event topic: the flag the broker replayed it with counts.
        assert!(r.outbound("pvbus/rules/decisions", true).unwrap().retain);
    }

    #[test]
    fn forward_limits_what_goes_out() {
        let r = Router::new(
            "home/pv",
            "s",
            vec!["relays/#".into(), "site/state".into()],
            vec![],
            false,
        );
        assert!(r.outbound("home/pv/relays/pump/state", false).is_some());
        assert!(!r.outbound("home/pv/site/state", false).unwrap().throttled);
        assert_eq!(r.outbound("home/pv/vedirect/mppt/state", false), None);
        assert_eq!(
            r.local_filters(),
            ["home/pv/relays/#", "home/pv/site/state"]
        );
    }

    #[test]
    fn only_accepted_commands_come_in() {
        let r = router();
        assert_eq!(
            r.inbound("sites/cabin/relays/pump/mode/set").as_deref(),
            Some("pvbus/relays/pump/mode/set")
        );
        for topic in [
            "sites/cabin/relays/pump/auto/set",
            "sites/cabin/relays/pump/state",
            "sites/other/relays/pump/mode/set",
            "sites/cabin/relays/pump/mode/set/x",
        ] {
            assert_eq!(r.inbound(topic), None, "{topic}");
        }
        assert_eq!(r.remote_filters(), ["sites/cabin/relays/+/mode/set"]);
        assert_eq!(r.remote_status(), "sites/cabin/cloud/status");
    }

    #[test]
    fn readings_are_sent_once_per_interval_latest_wins() {
        let mut outbox = Outbox::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let topic = "s/vedirect/mppt/state";
        assert!(outbox.record(topic, Bytes::from("1"), true, t0));
        outbox.sent(topic, t0);
        for (i, value) in ["2", "3", "4"].iter().enumerate() {
            let at = t0 + Duration::from_secs(10 * (i as u64 + 1));
            assert!(!outbox.record(topic, Bytes::from(*value), true, at));
        }
        assert_eq!(outbox.next_due(), Some(t0 + Duration::from_secs(60)));
        assert!(outbox.due(t0 + Duration::from_secs(59)).is_empty());
        let due = outbox.due(t0 + Duration::from_secs(60));
        assert_eq!(due, vec![(topic.to_string(), Bytes::from("4"))]);
        assert_eq!(outbox.next_due(), None);
        // Immediate topics are never held back.
        assert!(outbox.record("s/relays/pump/state", Bytes::from("ON"), false, t0));
        outbox.sent("s/relays/pump/state", t0);
        assert!(outbox.record("s/relays/pump/state", Bytes::from("OFF"), false, t0));
        // The same value again is not news.
        outbox.sent("s/relays/pump/state", t0);
        assert!(!outbox.record("s/relays/pump/state", Bytes::from("OFF"), false, t0));
    }

    #[test]
    fn replay_gives_every_latest_value_and_clears_what_was_pending() {
        let mut outbox = Outbox::new(Duration::from_secs(60));
        let t0 = Instant::now();
        outbox.record("s/a/b/state", Bytes::from("1"), true, t0);
        outbox.sent("s/a/b/state", t0);
        outbox.record("s/a/b/state", Bytes::from("2"), true, t0);
        outbox.record("s/relays/pump/mode", Bytes::from("auto_off"), false, t0);
        let mut all = outbox.replay(t0);
        all.sort();
        assert_eq!(
            all,
            vec![
                ("s/a/b/state".to_string(), Bytes::from("2")),
                ("s/relays/pump/mode".to_string(), Bytes::from("auto_off")),
            ]
        );
        assert_eq!(outbox.next_due(), None);
        assert_eq!(outbox.len(), 2);
    }
}
