//! `pvbus-coldbackup`: the cold-backup plugin. Link it into the plugins folder under the
//! id you want (`ln -s /usr/bin/pvbus-coldbackup /etc/pvbus/plugins.d/coldbackup`) and
//! configure it in `[plugins.config.coldbackup]`; see the library's documentation and
//! docs/plugins.md.

use std::time::Duration;

use anyhow::Context as _;
use pvbus_bus::RelayMode;
use pvbus_bus::contract::now_ts;
use pvbus_plugin_coldbackup::{ColdBackup, Effects, Settings};
use pvbus_plugin_sdk::{Event, Plugin, PluginEnv, Shutdown};
use tokio::time::Instant;
use tracing::{info, warn};

/// When the next daily start is due, in local time.
fn next_start(hour: i8, minute: i8) -> Option<Instant> {
    let now = jiff::Zoned::now();
    let today = now
        .date()
        .at(hour, minute, 0, 0)
        .to_zoned(now.time_zone().clone())
        .ok()?;
    let next = if today > now {
        today
    } else {
        today.tomorrow().ok()?
    };
    let wait = Duration::try_from(now.duration_until(&next)).ok()?;
    Some(Instant::now() + wait)
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Timers {
    timeout: Option<Instant>,
    grace: Option<Instant>,
    wake: Option<Instant>,
    start: Option<Instant>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    if pvbus_plugin_sdk::wants_help(HELP) {
        return Ok(());
    }
    pvbus_plugin_sdk::bus_logging("coldbackup");
    let env = PluginEnv::from_env()?;
    let settings: Settings = env.settings()?;
    let plan = settings.check(&env.id)?;
    let (plugin, mut inbox) = Plugin::connect_with(&env);
    let topics = plugin.topics().clone();
    plugin.subscribe_commands();
    let relay_mode_topic = topics.relay_mode(&plan.relay);
    plugin.bus().subscribe(relay_mode_topic.clone());
    if let Some(battery) = &plan.battery {
        plugin
            .bus()
            .subscribe(topics.absolute(&format!("+/{battery}/state")));
    }
    let (mut shutdown, _trigger) = Shutdown::on_signals();

    let mut backup = ColdBackup::new(plan.clone());
    plugin.publish_state(&plan.device, backup.state(now_ts()));
    let mut timers = Timers {
        timeout: None,
        grace: None,
        wake: None,
        start: plan.start_at.and_then(|(h, m)| next_start(h, m)),
    };
    info!(
        relay = %plan.relay,
        "cold backup ready{}",
        match plan.start_at {
            Some((h, m)) => format!(", every day at {h:02}:{m:02}"),
            None => ", started by run/set".into(),
        }
    );

    let apply = |effects: Effects, timers: &mut Timers, command_topic: Option<&str>| {
        if let Some(cmd) = &effects.relay_command {
            info!(relay = %plan.relay, "relay mode/set {cmd}");
            plugin
                .bus()
                .publish(topics.relay_mode_set(&plan.relay), cmd.clone());
        }
        if let Some(state) = effects.state {
            info!("{state}");
            plugin.publish_state(&plan.device, state);
        }
        let now = Instant::now();
        if effects.arm_timeout {
            timers.timeout = Some(now + plan.max_duration);
        }
        if effects.arm_wake {
            timers.wake = Some(now + plan.wake_delay);
        }
        if effects.arm_grace {
            timers.timeout = None;
            timers.wake = None;
            timers.grace = Some(now + plan.shutdown_grace);
        }
        if let Some(refused) = effects.refused {
            warn!("{refused}");
            if let Some(topic) = command_topic {
                plugin.report_error(topic, refused);
            }
        }
    };

    loop {
        tokio::select! {
            event = inbox.recv() => {
                let Some(event) = event else { break };
                if let Some(cmd) = plugin.command(&event) {
                    if cmd.device != plan.device {
                        plugin.report_error(&cmd.topic, format!("unknown device {:?}: the run is {:?}", cmd.device, plan.device));
                        continue;
                    }
                    let effects = match cmd.setting.as_str() {
                        "run" => backup.start(now_ts()),
                        "done" => backup.done(&cmd.payload, now_ts()),
                        other => Effects {
                            refused: Some(format!("unknown command {other:?}: use run/set or done/set")),
                            ..Effects::default()
                        },
                    };
                    apply(effects, &mut timers, Some(&cmd.topic));
                    continue;
                }
                let Event::Message(m) = event else { continue };
                if m.topic == relay_mode_topic {
                    backup.relay_mode = m.text().ok().and_then(|t| t.parse::<RelayMode>().ok());
                } else if let Some((_, device)) = topics.parse_device_state(&m.topic)
                    && let Ok(state) = serde_json::from_slice(&m.payload)
                {
                    backup.on_device_state(device, &state);
                }
            }
            _ = at(timers.start) => {
                timers.start = plan.start_at.and_then(|(h, m)| next_start(h, m));
                info!("scheduled start");
                let effects = backup.start(now_ts());
                apply(effects, &mut timers, None);
            }
            _ = at(timers.wake) => {
                timers.wake = None;
                if let Some((mac, to)) = plan.wake {
                    match pvbus_plugin_wol::wake(mac, to).with_context(|| format!("wake-on-LAN to {to}")) {
                        Ok(()) => info!("sent wake-on-LAN to {mac}"),
                        Err(e) => warn!("{e:#}"),
                    }
                }
            }
            _ = at(timers.timeout) => {
                timers.timeout = None;
                timers.wake = None;
                warn!("no report from the backup machine within {:?}: powering it off", plan.max_duration);
                let effects = backup.timed_out(now_ts());
                apply(effects, &mut timers, None);
            }
            _ = at(timers.grace) => {
                timers.grace = None;
                let effects = backup.grace_over(now_ts());
                apply(effects, &mut timers, None);
            }
            _ = shutdown.wait() => break,
        }
    }
    if timers.timeout.is_some() || timers.grace.is_some() {
        warn!("stopping during a run: the relay's override ends it by itself");
    }
    plugin.shutdown().await;
    Ok(())
}

const HELP: &str =
    "pvbus-coldbackup: a pvbus plugin that powers a backup machine for its nightly backup.

Started by `pvbus plugins` from its folder (PVBUS_BROKER, PVBUS_BASE, PVBUS_PLUGIN_ID in
the environment); settings in [plugins.config.<id>]: relay, battery, min_soc, start_at,
max_duration, shutdown_grace, wake_mac, wake_broadcast, wake_delay, device. At start_at or
on <base>/<id>/<device>/run/set it switches the relay on (when the battery allows), waits for
<base>/<id>/<device>/done/set (ok | failed: why) or max_duration, then switches it off after
shutdown_grace; the run is on <base>/<id>/<device>/state. See docs/plugins.md.";
