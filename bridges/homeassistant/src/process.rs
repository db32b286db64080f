//! The `homeassistant` process: reads the bus, keeps the [`Inventory`], and keeps the
//! broker's retained discovery configs equal to what the inventory calls for.
//!
//! It starts by listening: retained discovery configs of ours (left by an earlier run)
//! and the bus's retained state arrive first; a message to itself on
//! `<base>/homeassistant/sync` marks the end of that burst. Only then does it announce
//! and remove, so a restart neither flickers entities nor forgets to remove a device that
//! vanished while it was down. After every reconnect it listens again the same way (the
//! broker may have lost or changed its memory meanwhile).

use std::collections::{BTreeMap, BTreeSet};

use pvbus_bus::config::BusConfig;
use pvbus_bus::{Bus, Event, Message, Shutdown, Topics};
use tracing::{debug, info, warn};

use crate::config::HomeAssistantConfig;
use crate::discovery::{self, Context};
use crate::inventory::{Inventory, Observed};

/// The process name on the bus.
pub const PROCESS: &str = "homeassistant";

struct State<'a> {
    bus: Bus,
    ctx: Context<'a>,
    inventory: Inventory,
    /// What the broker holds from us, as far as we know: discovery topic → payload.
    announced: BTreeMap<String, String>,
    /// The nonce of the sync message that ends the current listening phase.
    sync_nonce: u64,
    synced: bool,
    /// State topics whose bad payload was already logged (logged again once fixed).
    warned: BTreeSet<String>,
}

/// Runs until `shutdown` fires. When disabled, it removes every announcement, leaves the
/// bus and then only waits for the shutdown: under `pvbus run` an exit would be taken for
/// a crash and restarted, over and over.
pub async fn run(
    config: HomeAssistantConfig,
    bus_config: BusConfig,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (bus, mut inbox) = Bus::connect(&bus_config, PROCESS);
    let topics: Topics = bus.topics().clone();
    for filter in [
        topics.device_state_filter(),
        topics.device_availability_filter(),
        topics.process_status_filter(),
        topics.relay_mode_filter(),
        topics.rule_status_filter(),
        topics.site_state(),
        topics.site_surplus(),
        format!("{}/device/+/config", config.discovery_prefix),
        config.status_topic(),
        // Last: its echo comes after every retained message of the filters above.
        topics.sync(PROCESS),
    ] {
        bus.subscribe(filter);
    }
    let mut state = State {
        bus: bus.clone(),
        ctx: Context {
            config: &config,
            topics: &topics,
        },
        inventory: Inventory::default(),
        announced: BTreeMap::new(),
        sync_nonce: 0,
        synced: false,
        warned: BTreeSet::new(),
    };
    info!(
        prefix = %config.discovery_prefix,
        enabled = config.enabled,
        "Home Assistant discovery starting"
    );
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            event = inbox.recv() => match event {
                None => break,
                Some(Event::Connected) => state.listen_again(),
                Some(Event::Disconnected) => warn!("bus lost; reconnecting"),
                Some(Event::Message(m)) => {
                    if state.handle(&m) && !config.enabled {
                        info!("disabled: every pvbus entity removed from Home Assistant; idle until stopped");
                        bus.shutdown().await;
                        shutdown.wait().await;
                        return Ok(());
                    }
                }
            }
        }
    }
    bus.shutdown().await;
    Ok(())
}

impl State<'_> {
    /// After a (re)connection: forget, and learn everything again from retained state.
    fn listen_again(&mut self) {
        self.inventory = Inventory::default();
        self.announced.clear();
        self.synced = false;
        self.sync_nonce += 1;
        self.bus.publish(
            self.ctx.topics.sync(PROCESS),
            format!("{}-{}", std::process::id(), self.sync_nonce),
        );
    }

    /// Handles one message; true when the first reconciliation after a sync was done.
    fn handle(&mut self, m: &Message) -> bool {
        let topics = self.ctx.topics;
        if m.topic == topics.sync(PROCESS) {
            let expected = format!("{}-{}", std::process::id(), self.sync_nonce);
            if !self.synced && m.payload.as_ref() == expected.as_bytes() {
                self.synced = true;
                debug!(
                    devices = self.inventory.devices.len(),
                    relays = self.inventory.relays.len(),
                    announced = self.announced.len(),
                    "retained state received"
                );
                self.reconcile();
                return true;
            }
            return false;
        }
        if let Some(_node) = self.ctx.parse_config_topic(&m.topic) {
            if m.payload.is_empty() {
                self.announced.remove(&m.topic);
            } else if discovery::is_ours(&m.payload) {
                let text = String::from_utf8_lossy(&m.payload).into_owned();
                self.announced.insert(m.topic.clone(), text);
            }
            return false;
        }
        if m.topic == self.ctx.config.status_topic() {
            if m.payload.as_ref() == b"online" && self.synced {
                info!("Home Assistant is online: announcing everything again");
                self.announce_all();
            }
            return false;
        }
        match self.inventory.observe(topics, &m.topic, &m.payload) {
            Observed::Nothing => {
                self.warned.remove(&m.topic);
            }
            Observed::Changed => {
                self.warned.remove(&m.topic);
                if self.synced {
                    self.reconcile();
                }
            }
            Observed::Invalid(error) => {
                if self.warned.insert(m.topic.clone()) {
                    warn!(%error, "ignored a state that HA cannot be told about");
                }
            }
        }
        false
    }

    fn desired(&self) -> BTreeMap<String, String> {
        if self.ctx.config.enabled {
            discovery::announcements(&self.ctx, &self.inventory)
        } else {
            BTreeMap::new()
        }
    }

    /// Publishes what changed and removes what is no longer there.
    fn reconcile(&mut self) {
        let desired = self.desired();
        for (topic, payload) in &desired {
            if self.announced.get(topic) != Some(payload) {
                info!(%topic, "announcing");
                self.bus.publish_retained(topic.clone(), payload.clone());
                self.announced.insert(topic.clone(), payload.clone());
            }
        }
        let gone: Vec<String> = self
            .announced
            .keys()
            .filter(|t| !desired.contains_key(*t))
            .cloned()
            .collect();
        for topic in gone {
            info!(%topic, "removing");
            self.bus.clear_retained(topic.clone());
            self.announced.remove(&topic);
        }
    }

    /// HA restarted: every config again, whether or not the broker still holds it.
    fn announce_all(&mut self) {
        let desired = self.desired();
        for (topic, payload) in &desired {
            self.bus.publish_retained(topic.clone(), payload.clone());
        }
        self.announced = desired;
    }
}
