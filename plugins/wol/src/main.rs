//! `pvbus-wol`: a plugin (drop it, or a link to it, into the plugins folder) that reports
//! whether the configured hosts answer and wakes them on command.
//!
//! ```toml
//! [plugins.config.wol]          # the id is the file name in the plugins folder
//! interval = "60s"
//! timeout = "1s"
//! broadcast = "255.255.255.255:9"
//! [[plugins.config.wol.host]]
//! name = "laptop"
//! address = "192.168.1.20"      # a name or an address
//! method = "ping"               # ICMP echo (default), or "tcp": a knock on `port`
//! port = 22                     # the knock's port; a refusal counts as up (default 22)
//! mac = "aa:bb:cc:dd:ee:ff"     # optional: enables <base>/<id>/laptop/wake/set
//! ```
//!
//! `ping` needs an ICMP socket: a datagram one (the process's group in
//! `net.ipv4.ping_group_range`, the default with systemd ≥ 243) or a raw one (root or
//! CAP_NET_RAW). When neither is allowed, or a host has no IPv4 address, its `ping` is a
//! TCP knock on its `port` instead, said once in the log; each state says which answered.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pvbus_plugin_sdk::parse_span;
use pvbus_plugin_sdk::{Event, Plugin, PluginEnv, Shutdown};
use pvbus_plugin_wol::{Mac, Pinger, Presence, knock, wake};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    interval: String,
    timeout: String,
    broadcast: String,
    host: Vec<Host>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: "60s".into(),
            timeout: "1s".into(),
            broadcast: "255.255.255.255:9".into(),
            host: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Host {
    name: String,
    address: String,
    #[serde(default)]
    method: Method,
    #[serde(default = "default_port")]
    port: u16,
    mac: Option<String>,
}

/// How a host is asked whether it is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Method {
    /// ICMP echo; a TCP knock when this process may not send ICMP.
    #[default]
    Ping,
    /// A TCP knock on `port`: for hosts that drop ping.
    Tcp,
}

fn default_port() -> u16 {
    22
}

struct Checked {
    interval: Duration,
    timeout: Duration,
    broadcast: SocketAddr,
    macs: Vec<Option<Mac>>,
}

fn check(id: &str, s: &Settings) -> anyhow::Result<Checked> {
    let key = |k: &str| format!("plugins.config.{id}.{k}");
    let interval = parse_span(&s.interval).with_context(|| key("interval"))?;
    let timeout = parse_span(&s.timeout).with_context(|| key("timeout"))?;
    if interval.is_zero() || timeout.is_zero() {
        bail!(
            "{} and {}: must be longer than zero",
            key("interval"),
            key("timeout")
        );
    }
    let broadcast = s.broadcast.parse().with_context(|| {
        format!(
            "{}: {:?} is not address:port",
            key("broadcast"),
            s.broadcast
        )
    })?;
    let mut macs = Vec::new();
    for (i, h) in s.host.iter().enumerate() {
        if !pvbus_plugin_sdk::env::is_topic_level(&h.name) || h.name == "presence" {
            bail!(
                "{}: {:?} is not a usable device name",
                key(&format!("host[{i}].name")),
                h.name
            );
        }
        let mac = match &h.mac {
            Some(m) => Some(
                m.parse::<Mac>()
                    .with_context(|| key(&format!("host[{i}].mac")))?,
            ),
            None => None,
        };
        macs.push(mac);
    }
    Ok(Checked {
        interval,
        timeout,
        broadcast,
        macs,
    })
}

/// The host's addresses with its port; IPv4 first (ping is IPv4).
async fn resolve(host: &Host) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.address.as_str(), host.port))
        .await
        .map(Iterator::collect)
        .unwrap_or_default();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
}

/// Asks one host, by ping when it can; returns what answered and how.
async fn probe(host: &Host, pinger: Option<&Pinger>, timeout: Duration) -> (Presence, Method) {
    let addrs = resolve(host).await;
    let Some(&first) = addrs.first() else {
        return (Presence::Down, host.method);
    };
    if host.method == Method::Ping
        && let Some(pinger) = pinger
        && let SocketAddr::V4(v4) = first
    {
        return (pinger.ping(*v4.ip(), timeout).await, Method::Ping);
    }
    (knock(first, timeout).await, Method::Tcp)
}

async fn check_hosts(
    plugin: &Plugin,
    settings: &Settings,
    pinger: Option<&Pinger>,
    timeout: Duration,
) {
    let mut up = 0;
    for host in &settings.host {
        let (presence, method) = probe(host, pinger, timeout).await;
        let method = match method {
            Method::Ping => "ping",
            Method::Tcp => "tcp",
        };
        let state = match presence {
            Presence::Up(latency) => {
                up += 1;
                json!({"reachable": true, "latency": (latency.as_secs_f64() * 1e4).round() / 1e4, "method": method})
            }
            Presence::Down => json!({"reachable": false, "latency": null, "method": method}),
        };
        plugin.publish_state(&host.name, state);
    }
    plugin.publish_state("presence", json!({"hosts_up": up, "any_up": up > 0}));
}

/// The ICMP socket, when a host wants ping; the one line that says why there is none.
fn open_pinger(settings: &Settings) -> Option<Pinger> {
    let pinged: Vec<&str> = settings
        .host
        .iter()
        .filter(|h| h.method == Method::Ping)
        .map(|h| h.name.as_str())
        .collect();
    if pinged.is_empty() {
        return None;
    }
    match Pinger::open() {
        Ok(pinger) => {
            info!("ping on an ICMP {:?} socket", pinger.kind());
            Some(pinger)
        }
        Err(e) => {
            warn!(
                "{e}. Hosts with method \"ping\" ({}) are knocked by TCP on their port instead: one that drops every port will look absent",
                pinged.join(", ")
            );
            None
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    if pvbus_plugin_sdk::wants_help(HELP) {
        return Ok(());
    }
    pvbus_plugin_sdk::bus_logging("wol");
    let env = PluginEnv::from_env()?;
    let settings: Settings = env.settings()?;
    let checked = check(&env.id, &settings)?;
    let pinger = open_pinger(&settings);
    let (plugin, mut inbox) = Plugin::connect_with(&env);
    plugin.subscribe_commands();
    let (mut shutdown, _trigger) = Shutdown::on_signals();
    info!(
        "{} hosts, every {:?}",
        settings.host.len(),
        checked.interval
    );
    let mut ticks = tokio::time::interval(checked.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => check_hosts(&plugin, &settings, pinger.as_ref(), checked.timeout).await,
            event = inbox.recv() => {
                let Some(event) = event else { break };
                if matches!(event, Event::Connected) {
                    continue;
                }
                let Some(cmd) = plugin.command(&event) else { continue };
                let host = settings.host.iter().position(|h| h.name == cmd.device);
                match (host, cmd.setting.as_str()) {
                    (Some(i), "wake") => match checked.macs[i] {
                        Some(mac) => match wake(mac, checked.broadcast) {
                            Ok(()) => info!("woke {} ({mac})", cmd.device),
                            Err(e) => plugin.report_error(&cmd.topic, format!("cannot send the magic packet: {e}")),
                        },
                        None => plugin.report_error(&cmd.topic, format!("{} has no `mac` in the configuration", cmd.device)),
                    },
                    (_, "check") => check_hosts(&plugin, &settings, pinger.as_ref(), checked.timeout).await,
                    _ => {
                        warn!(topic = %cmd.topic, "unknown command");
                        plugin.report_error(&cmd.topic, "unknown command: use <host>/wake/set or presence/check/set");
                    }
                }
            }
            _ = shutdown.wait() => break,
        }
    }
    plugin.shutdown().await;
    Ok(())
}

const HELP: &str =
    "pvbus-wol: a pvbus plugin that reports whether hosts answer and wakes them (wake-on-LAN).

Started by `pvbus plugins` from its folder (PVBUS_BROKER, PVBUS_BASE, PVBUS_PLUGIN_ID in
the environment); settings in [plugins.config.<id>]: interval, timeout, broadcast, and
[[plugins.config.<id>.host]] name, address, method (\"ping\": ICMP echo, the default, or
\"tcp\": a knock on port, where a refusal counts as up), port (default 22), mac. Without
permission for ICMP, ping falls back to the TCP knock (said once in the log).
Publishes <base>/<id>/<host>/state {\"reachable\":..,\"latency\":..,\"method\":..} and
<base>/<id>/presence/state {\"hosts_up\":..,\"any_up\":..}; <base>/<id>/<host>/wake/set sends a
magic packet. See docs/plugins.md.";
