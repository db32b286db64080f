//! The `pvbus plugins` process: one bus connection, the folder's executables as
//! supervised children, the `exec` commands on their timers, the dynamic libraries in
//! the host — and the order of things at shutdown (children first, the bus last).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use pvbus_bus::contract::ONLINE;
use pvbus_bus::{Bus, BusConfig, Event, Shutdown};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::child::{self, OnlineMap, ProgramSpec};
use crate::config::{PluginsConfig, Timing};
use crate::dylib::DylibHost;
use crate::folder::{self, Change, FolderWatch};
use crate::health;
use crate::logs::LineBudget;

/// The process name on the bus (`<base>/plugins/status`).
pub const PROCESS: &str = "plugins";

/// The environment every folder plugin gets (its id is added per plugin).
pub fn plugin_env(bus: &BusConfig) -> Vec<(String, String)> {
    let (host, port) = bus.endpoint();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let mut env = vec![
        ("PVBUS_BROKER".to_string(), format!("{host}:{port}")),
        ("PVBUS_BASE".to_string(), bus.base.clone()),
    ];
    if let Some(user) = &bus.username {
        env.push(("PVBUS_USERNAME".into(), user.clone()));
    }
    if let Some(password) = &bus.password {
        env.push(("PVBUS_PASSWORD".into(), password.clone()));
    }
    env
}

struct Running {
    path: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    flooded: std::sync::Arc<tokio::sync::Notify>,
    meter: Meter,
}

/// How long the message rate of a plugin is measured over.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// Messages a plugin published in the current window.
#[derive(Default)]
struct Meter {
    since: Option<tokio::time::Instant>,
    count: u32,
}

/// The folder's plugins: which run, started and stopped as files come and go.
struct FolderPlugins {
    dir: PathBuf,
    watch: FolderWatch,
    running: BTreeMap<String, Running>,
    bus: Bus,
    timing: Timing,
    env: Vec<(String, String)>,
    /// Each plugin's `[plugins.config.<id>]`, as JSON.
    settings: BTreeMap<String, String>,
    online: watch::Receiver<OnlineMap>,
    max_messages_per_sec: u32,
    /// The devices each plugin published (`<base>/<id>/<device>/state`).
    devices: BTreeMap<String, BTreeSet<String>>,
}

impl FolderPlugins {
    fn open(
        dir: &Path,
        bus: &Bus,
        timing: Timing,
        env: Vec<(String, String)>,
        settings: BTreeMap<String, String>,
        online: watch::Receiver<OnlineMap>,
    ) -> anyhow::Result<FolderPlugins> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("plugins.folder: cannot create {}", dir.display()))?;
            info!("created the plugins folder {}", dir.display());
        }
        let watch = FolderWatch::new(dir)
            .with_context(|| format!("plugins.folder: cannot watch {}", dir.display()))?;
        let mut plugins = FolderPlugins {
            dir: dir.to_path_buf(),
            watch,
            running: BTreeMap::new(),
            bus: bus.clone(),
            timing,
            env,
            online,
            max_messages_per_sec: timing.max_messages_per_sec,
            devices: BTreeMap::new(),
            settings,
        };
        plugins.rescan();
        Ok(plugins)
    }

    /// Starts what is in the folder and not running, stops what runs and is gone.
    fn rescan(&mut self) {
        let (found, clashes) = match folder::scan(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                warn!("plugins folder {}: cannot read: {e}", self.dir.display());
                return;
            }
        };
        for path in clashes {
            warn!(
                "{}: not started: another file of the folder has the same plugin id",
                path.display()
            );
        }
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(id, r)| !found.iter().any(|(fid, p)| fid == *id && *p == r.path))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.stop(&id, true);
        }
        for (id, path) in found {
            if !self.running.contains_key(&id) {
                self.start(id, path, None);
            }
        }
    }

    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            let Some(id) = folder::plugin_id(&change.name) else {
                continue;
            };
            let path = self.dir.join(&change.name);
            let executable = folder::is_executable(&path);
            match self.running.get(&id) {
                Some(r) if r.path == path => {
                    if !executable {
                        info!(plugin = %id, "{} removed (or no longer executable): stopping it", path.display());
                        self.stop(&id, true);
                    } else if change.rewritten {
                        info!(plugin = %id, "{} changed: restarting it", path.display());
                        let old = self.stop(&id, false);
                        self.start(id, path, old);
                    }
                }
                Some(r) if executable => warn!(
                    "{}: not started: {} already runs as plugin {id}",
                    path.display(),
                    r.path.display()
                ),
                Some(_) => {}
                None if executable => self.start(id, path, None),
                None => {}
            }
        }
    }

    /// Starts `id`, once `after` (the previous instance's task) has finished.
    fn start(&mut self, id: String, path: PathBuf, after: Option<JoinHandle<()>>) {
        let mut env = self.env.clone();
        env.push(("PVBUS_PLUGIN_ID".into(), id.clone()));
        if let Some(settings) = self.settings.get(&id) {
            env.push(("PVBUS_PLUGIN_CONFIG".into(), settings.clone()));
        }
        let flooded = std::sync::Arc::new(tokio::sync::Notify::new());
        let spec = ProgramSpec {
            id: id.clone(),
            path: path.clone(),
            env,
            flooded: flooded.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let supervise = child::supervise(
            spec,
            self.timing,
            self.bus.clone(),
            self.online.clone(),
            stop_rx,
        );
        let task = tokio::spawn(async move {
            if let Some(previous) = after {
                let _ = previous.await;
            }
            supervise.await;
        });
        self.bus
            .subscribe(self.bus.topics().absolute(&format!("{id}/#")));
        self.running.insert(
            id,
            Running {
                path,
                stop,
                task,
                flooded,
                meter: Meter::default(),
            },
        );
    }

    /// Stops `id`; `forget`: it is no longer a plugin: once it has stopped, its health,
    /// status and devices are removed from the bus.
    /// Returns the task that finishes when it has stopped (when not forgotten).
    fn stop(&mut self, id: &str, forget: bool) -> Option<JoinHandle<()>> {
        let r = self.running.remove(id)?;
        r.stop.send_replace(true);
        if forget {
            let bus = self.bus.clone();
            let id = id.to_string();
            let devices = self.devices.remove(&id).unwrap_or_default();
            tokio::spawn(async move {
                let _ = r.task.await;
                health::clear(&bus, &id);
                // Gone from the bus, and so from Home Assistant and the rules.
                let topics = bus.topics();
                for device in devices {
                    bus.clear_retained(topics.device_state(&id, &device));
                    bus.clear_retained(topics.device_availability(&id, &device));
                }
                bus.clear_retained(topics.process_status(&id));
            });
            None
        } else {
            Some(r.task)
        }
    }

    /// Counts a message on `<base>/<id>/...` against plugin `id`; one that publishes more
    /// than `max_messages_per_sec` over the window is stopped (and restarted later like
    /// one that crashed), so that it cannot drown the broker of a Pi.
    fn observe(&mut self, topic: &str) {
        let Some(id) = self
            .bus
            .topics()
            .relative(topic)
            .and_then(|rest| rest.split('/').next())
        else {
            return;
        };
        let limit = self
            .max_messages_per_sec
            .saturating_mul(FLOOD_WINDOW.as_secs() as u32);
        let Some(r) = self.running.get_mut(id) else {
            return;
        };
        // Its devices, removed from the bus with it when its file goes.
        if let Some((bridge, device)) = self.bus.topics().parse_device_state(topic)
            && bridge == id
        {
            self.devices
                .entry(id.to_string())
                .or_default()
                .insert(device.to_string());
        }
        let now = tokio::time::Instant::now();
        let m = &mut r.meter;
        if m.since
            .is_none_or(|s| now.duration_since(s) >= FLOOD_WINDOW)
        {
            *m = Meter {
                since: Some(now),
                count: 0,
            };
        }
        m.count += 1;
        if m.count > limit {
            // Measured again from zero: the next instance gets a fresh window.
            *m = Meter {
                since: Some(now),
                count: 0,
            };
            warn!(plugin = %id, "more than {limit} messages in {FLOOD_WINDOW:?}: stopping it");
            r.flooded.notify_one();
        }
    }

    async fn stop_all(mut self) {
        let ids: Vec<String> = self.running.keys().cloned().collect();
        let tasks: Vec<JoinHandle<()>> = ids.iter().filter_map(|id| self.stop(id, false)).collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}

async fn next_change(folder: &mut Option<FolderPlugins>) -> std::io::Result<Option<Vec<Change>>> {
    match folder {
        Some(f) => f.watch.next().await,
        None => std::future::pending().await,
    }
}

/// Runs until `shutdown` fires.
pub async fn run(
    cfg: PluginsConfig,
    bus_cfg: BusConfig,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let timing = cfg.timing()?;
    let (bus, mut inbox) = Bus::connect(&bus_cfg, PROCESS);
    let topics = bus.topics().clone();
    // Which plugins are online: a folder plugin that never is gets reported.
    bus.subscribe(topics.process_status_filter());
    let (online_tx, online_rx) = watch::channel(OnlineMap::new());

    let (stop_exec, stop_exec_rx) = watch::channel(false);
    let exec_tasks: Vec<JoinHandle<()>> = cfg
        .exec
        .iter()
        .map(|e| {
            tokio::spawn(crate::exec::run_exec(
                e.clone(),
                bus.clone(),
                LineBudget::new(timing.log_lines_per_sec),
                stop_exec_rx.clone(),
            ))
        })
        .collect();

    let mut host = DylibHost::start(&cfg.dylib, &bus);

    let mut folder = match &cfg.folder {
        Some(dir) => Some(FolderPlugins::open(
            dir,
            &bus,
            timing,
            plugin_env(&bus_cfg),
            cfg.config
                .iter()
                .map(|(id, v)| (id.clone(), serde_json::to_string(v).unwrap_or_default()))
                .collect(),
            online_rx,
        )?),
        None => None,
    };
    info!(
        folder = ?cfg.folder,
        exec = cfg.exec.len(),
        dylib = host.running().len(),
        "plugins running"
    );

    loop {
        tokio::select! {
            event = inbox.recv() => match event {
                Some(Event::Message(m)) => {
                    if let Some(process) = topics.parse_process_status(&m.topic) {
                        let online = m.payload.as_ref() == ONLINE.as_bytes();
                        online_tx.send_if_modified(|map| {
                            map.insert(process.to_string(), online) != Some(online)
                        });
                    }
                    host.on_message(&m);
                    if let Some(f) = folder.as_mut() {
                        f.observe(&m.topic);
                    }
                }
                Some(_) => {}
                None => break,
            },
            changes = next_change(&mut folder) => match changes {
                Ok(Some(changes)) => {
                    if let Some(f) = folder.as_mut() {
                        f.apply(changes);
                    }
                }
                Ok(None) => {
                    warn!("plugins folder: events were lost (the kernel's queue overflowed); rescanning");
                    if let Some(f) = folder.as_mut() {
                        f.rescan();
                    }
                }
                Err(e) => {
                    // Without the watch, removing a file would no longer stop its plugin:
                    // stop them rather than run plugins nobody can remove.
                    tracing::error!("plugins folder: the watch failed ({e}); stopping the folder's plugins (exec and dylib plugins go on)");
                    if let Some(f) = folder.take() {
                        f.stop_all().await;
                    }
                }
            },
            i = tick_due(host.next_tick()) => host.tick(i),
            _ = shutdown.wait() => break,
        }
    }

    info!("stopping the plugins");
    // No longer read: dropped, incoming messages are discarded at once, so that a plugin
    // still flooding the bus cannot hold up the health reports of those being stopped.
    drop(inbox);
    stop_exec.send_replace(true);
    if let Some(f) = folder {
        f.stop_all().await;
    }
    for t in exec_tasks {
        let _ = t.await;
    }
    bus.shutdown().await;
    Ok(())
}

/// Completes when the next dylib tick is due; never when there is none. Takes the
/// deadline by value so that the host is not borrowed across the wait.
async fn tick_due(next: Option<(tokio::time::Instant, usize)>) -> usize {
    match next {
        Some((at, i)) => {
            tokio::time::sleep_until(at).await;
            i
        }
        None => std::future::pending().await,
    }
}
