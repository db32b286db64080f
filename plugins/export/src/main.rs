//! `pvbus-export`: history to emoncms and InfluxDB. Link it into the plugins folder
//! (`ln -s /usr/bin/pvbus-export /etc/pvbus/plugins.d/export`) and configure it:
//!
//! ```toml
//! [plugins.config.export]
//! interval = "60s"
//! spool_dir = "/var/lib/pvbus/export"
//! max_spool_bytes = 10485760
//! influx = { url = "https://eu-central-1-1.aws.cloud2.influxdata.com/api/v2/write?org=home&bucket=pv&precision=s", token = "..." }
//! emoncms = { url = "https://emoncms.org", apikey = "..." }
//! # a self-hosted server with its own CA: ca_file = "/etc/pvbus/home-ca.pem" in either
//! ```
//!
//! Every interval, the last value of each numeric reading goes into the spool (one batch
//! per service), then the spool is sent oldest first; while a service cannot be reached
//! the batches wait on disk (bounded), and sending resumes with a growing delay (up to
//! 10 min). `<base>/<id>/spool/state` says what waits:
//! `{"ts":..,"queued_batches":3,"queued_bytes":1200,"dropped_batches":0,"last_sent":..,"last_error":null}`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use pvbus_bus::contract::now_ts;
use pvbus_plugin_export::{
    Collector, Endpoint, EndpointError, Settings, Spool, emoncms_bulk, form_escape, influx_lines,
    post,
};
use pvbus_plugin_sdk::{Event, Plugin, PluginEnv, Shutdown, parse_span};
use serde_json::json;
use tokio::time::Instant;
use tracing::{info, warn};

const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Where each sink posts, checked at start.
struct Sinks {
    influx: Option<Endpoint>,
    /// `Authorization: Token <token>`.
    influx_auth: Option<String>,
    emoncms: Option<Endpoint>,
}

impl Sinks {
    fn new(id: &str, settings: &Settings) -> anyhow::Result<Sinks> {
        let key = |sink: &str, e: &EndpointError| format!("plugins.config.{id}.{sink}.{}", e.key());
        let influx = match &settings.influx {
            Some(i) => Some(
                Endpoint::new(&i.url, i.ca_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", key("influx", &e)))?,
            ),
            None => None,
        };
        let emoncms = match &settings.emoncms {
            Some(e) => {
                let url = format!(
                    "{}/input/bulk?apikey={}",
                    e.url.trim_end_matches('/'),
                    form_escape(&e.apikey)
                );
                Some(
                    Endpoint::new(&url, e.ca_file.as_deref())
                        .map_err(|e| anyhow::anyhow!("{}: {e}", key("emoncms", &e)))?,
                )
            }
            None => None,
        };
        Ok(Sinks {
            influx,
            influx_auth: settings
                .influx
                .as_ref()
                .and_then(|i| i.token.as_ref())
                .map(|t| format!("Token {t}")),
            emoncms,
        })
    }
}

/// Sends what waits for every sink, oldest first, until done or a failure.
async fn flush(sinks: &Sinks, spool: &Spool) -> Result<usize, String> {
    let mut sent = 0;
    if let Some(influx) = &sinks.influx {
        let headers: Vec<(&str, &str)> = sinks
            .influx_auth
            .iter()
            .map(|a| ("Authorization", a.as_str()))
            .collect();
        while let Some((path, body)) = spool.oldest("influx").map_err(|e| e.to_string())? {
            post(
                influx,
                &headers,
                "text/plain; charset=utf-8",
                &body,
                HTTP_TIMEOUT,
            )
            .await
            .map_err(|e| format!("influx: {e}"))?;
            std::fs::remove_file(&path).map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
    if let Some(emoncms) = &sinks.emoncms {
        while let Some((path, body)) = spool.oldest("emoncms").map_err(|e| e.to_string())? {
            let form = format!("data={}", form_escape(&body));
            post(
                emoncms,
                &[],
                "application/x-www-form-urlencoded",
                &form,
                HTTP_TIMEOUT,
            )
            .await
            .map_err(|e| format!("emoncms: {e}"))?;
            std::fs::remove_file(&path).map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
    Ok(sent)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    if pvbus_plugin_sdk::wants_help(HELP) {
        return Ok(());
    }
    pvbus_plugin_sdk::bus_logging("export");
    let env = PluginEnv::from_env()?;
    let settings: Settings = env.settings()?;
    let key = |k: &str| format!("plugins.config.{}.{k}", env.id);
    let interval = parse_span(&settings.interval).with_context(|| key("interval"))?;
    if interval.is_zero() {
        bail!("{}: must be longer than zero", key("interval"));
    }
    if settings.influx.is_none() && settings.emoncms.is_none() {
        bail!(
            "{}: nothing to export to: set `influx` and/or `emoncms`",
            key("")
        );
    }
    let sinks = Sinks::new(&env.id, &settings)?;
    let mut spool = Spool::open(&settings.spool_dir, settings.max_spool_bytes)
        .with_context(|| format!("{}: {}", key("spool_dir"), settings.spool_dir.display()))?;

    let (plugin, mut inbox) = Plugin::connect_with(&env);
    let topics = plugin.topics().clone();
    plugin.bus().subscribe(topics.device_state_filter());
    plugin.bus().subscribe(topics.site_state());
    let (mut shutdown, _trigger) = Shutdown::on_signals();

    let mut collector = Collector::default();
    let mut batch_at = Instant::now() + interval;
    // Something may wait from before a restart: try at once.
    let mut retry_at = Some(Instant::now());
    // The first retry comes after an interval (at most 5 s), then the delay doubles.
    let first_retry = interval.min(Duration::from_secs(5));
    let mut retry_delay = first_retry;
    let mut last_sent: Option<u64> = None;
    let mut last_error: Option<String> = None;
    info!(
        "exporting every {interval:?} to{}{}",
        if settings.influx.is_some() {
            " influx"
        } else {
            ""
        },
        if settings.emoncms.is_some() {
            " emoncms"
        } else {
            ""
        }
    );

    loop {
        tokio::select! {
            event = inbox.recv() => {
                let Some(Event::Message(m)) = event else {
                    if event.is_none() { break }
                    continue;
                };
                let Ok(state) = serde_json::from_slice(&m.payload) else { continue };
                if m.topic == topics.site_state() {
                    collector.feed("site", "site", &state);
                } else if let Some((source, device)) = topics.parse_device_state(&m.topic) {
                    // Our own report is not history.
                    if source != env.id {
                        collector.feed(source, device, &state);
                    }
                }
            }
            _ = tokio::time::sleep_until(batch_at) => {
                batch_at += interval;
                let points = collector.take();
                if !points.is_empty() {
                    let mut failed = None;
                    if settings.influx.is_some() {
                        failed = spool.push("influx", &influx_lines(&points)).err();
                    }
                    if settings.emoncms.is_some() {
                        failed = failed.or(spool.push("emoncms", &emoncms_bulk(&points)).err());
                    }
                    if let Some(e) = failed {
                        warn!("cannot write to the spool {}: {e}", settings.spool_dir.display());
                        last_error = Some(format!("spool: {e}"));
                    }
                    retry_at.get_or_insert_with(Instant::now);
                }
            }
            _ = async { tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)).await }, if retry_at.is_some() => {
                match flush(&sinks, &spool).await {
                    Ok(sent) => {
                        if sent > 0 {
                            last_sent = Some(now_ts());
                            if last_error.take().is_some() {
                                info!("sending again");
                            }
                        }
                        retry_at = None;
                        retry_delay = first_retry;
                    }
                    Err(e) => {
                        if last_error.as_deref() != Some(e.as_str()) {
                            warn!("{e}; batches wait on disk, next try in {retry_delay:?}");
                        }
                        last_error = Some(e);
                        retry_at = Some(Instant::now() + retry_delay);
                        retry_delay = (retry_delay * 2).min(RETRY_MAX);
                    }
                }
                let (batches, bytes) = spool.queued().unwrap_or((0, 0));
                plugin.publish_state("spool", json!({
                    "queued_batches": batches,
                    "queued_bytes": bytes,
                    "dropped_batches": spool.dropped,
                    "last_sent": last_sent,
                    "last_error": last_error,
                }));
            }
            _ = shutdown.wait() => break,
        }
    }
    plugin.shutdown().await;
    Ok(())
}

const HELP: &str =
    "pvbus-export: a pvbus plugin that sends the bus's readings as history to emoncms and InfluxDB.

Started by `pvbus plugins` from its folder (PVBUS_BROKER, PVBUS_BASE, PVBUS_PLUGIN_ID in
the environment); settings in [plugins.config.<id>]: interval, spool_dir, max_spool_bytes,
influx = { url, token, ca_file }, emoncms = { url, apikey, ca_file } (http:// or https://;
ca_file: the CA of a self-hosted server, default the system's roots). Batches wait on disk while
the internet is down (bounded); <base>/<id>/spool/state says what waits. See docs/plugins.md.";
