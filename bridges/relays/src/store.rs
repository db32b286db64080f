//! What outlives the process: `state.json` (forced modes, running overrides)
//! and `history.jsonl` (every change of mode or output, one JSON per line).
//!
//! `state.json` is replaced atomically: written to a temporary file, fsynced,
//! renamed over the old one, and the directory fsynced, so that after a kill -9
//! or a power cut it is either the old or the new file, never half of one. It is
//! written only when the saved view changes (SD cards wear out): the rules
//! switching an auto relay on and off never touch it.
//!
//! The history is appended to, one `write` per event followed by `fdatasync`:
//! rewriting the whole file per event would wear the card far more. A power cut
//! can at worst leave a torn last line, which the reader skips and counts. Past
//! `history_max_bytes` the file is renamed to `history.1.jsonl` (replacing the
//! previous one), so the history is bounded by twice that size.
//!
//! `lock` is held (flock) while the store is open: two relay processes on one state
//! directory would fight over the same outputs and overwrite each other's modes, so
//! the second one refuses to start. The kernel releases it when the process dies,
//! however it dies.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use pvbus_bus::{ReasonSource, RelayMode};
use serde::{Deserialize, Serialize};

use crate::machine::SavedRelay;

const STATE_FILE: &str = "state.json";
const HISTORY_FILE: &str = "history.jsonl";
const OLD_HISTORY_FILE: &str = "history.1.jsonl";
const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{dir} is already used by another pvbus relays{}: two processes would fight over the same relays; stop it first",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, pid: Option<u32> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    relays: BTreeMap<String, SavedRelay>,
}

/// One change of a relay's mode or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Unix seconds, to the millisecond.
    pub ts: f64,
    pub relay: String,
    pub prev_mode: RelayMode,
    pub mode: RelayMode,
    /// The output before and after, as read back from the hardware.
    pub prev_on: bool,
    pub on: bool,
    pub by: ReasonSource,
    pub text: String,
}

/// What was found on disk at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub saved: BTreeMap<String, SavedRelay>,
    /// A state file that could not be read, and where it was moved.
    pub problem: Option<String>,
}

pub struct Store {
    dir: PathBuf,
    /// Held for as long as the store is open.
    _lock: Flock<File>,
    history: File,
    history_len: u64,
    history_max_bytes: u64,
}

/// Takes `<dir>/lock` for this process and writes our pid in it (for the error
/// message of the next one); the file itself is never removed.
fn take_lock(dir: &Path) -> Result<Flock<File>, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(StoreError::Locked {
                dir: dir.to_owned(),
                pid,
            });
        }
        Err((_, errno)) => return Err(io(&path)(errno.into())),
    };
    file.set_len(0).map_err(io(&path))?;
    writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
    Ok(file)
}

impl Store {
    pub fn open(dir: &Path, history_max_bytes: u64) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = take_lock(dir)?;
        let loaded = load_state(dir)?;
        let path = dir.join(HISTORY_FILE);
        let history = open_append(&path)?;
        let history_len = history.metadata().map_err(io(&path))?.len();
        Ok((
            Store {
                dir: dir.to_owned(),
                _lock: lock,
                history,
                history_len,
                history_max_bytes,
            },
            loaded,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces `state.json` atomically; returns once it is on disk.
    pub fn save(&mut self, relays: &BTreeMap<String, SavedRelay>) -> Result<(), StoreError> {
        let state = StateFile {
            version: 1,
            relays: relays.clone(),
        };
        let body = serde_json::to_vec_pretty(&state).expect("state serialises");
        let path = self.dir.join(STATE_FILE);
        let temp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let written = (|| {
            let mut file = File::create(&temp).map_err(io(&temp))?;
            file.write_all(&body).map_err(io(&temp))?;
            file.sync_all().map_err(io(&temp))
        })();
        if let Err(e) = written {
            // A full disk: leave the old state as it was, and give back the space.
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        sync_dir(&self.dir)
    }

    /// Appends one event; returns once it is on disk.
    pub fn record(&mut self, event: &HistoryEvent) -> Result<(), StoreError> {
        if self.history_len >= self.history_max_bytes {
            self.rotate()?;
        }
        let mut line = serde_json::to_vec(event).expect("event serialises");
        line.push(b'\n');
        let path = self.dir.join(HISTORY_FILE);
        self.history.write_all(&line).map_err(io(&path))?;
        self.history.sync_data().map_err(io(&path))?;
        self.history_len += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        let current = self.dir.join(HISTORY_FILE);
        let old = self.dir.join(OLD_HISTORY_FILE);
        std::fs::rename(&current, &old).map_err(io(&old))?;
        self.history = open_append(&current)?;
        self.history_len = 0;
        sync_dir(&self.dir)
    }
}

fn open_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Reads `state.json`. A file that cannot be parsed (edited by hand, say) is
/// moved aside, not deleted, and the relays start in auto (off): safe, and the
/// bad file is still there to look at.
fn load_state(dir: &Path) -> Result<Loaded, StoreError> {
    let path = dir.join(STATE_FILE);
    let body = match std::fs::read(&path) {
        Ok(body) => body,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(io(&path)(e)),
    };
    match serde_json::from_slice::<StateFile>(&body) {
        Ok(state) => Ok(Loaded {
            saved: state.relays,
            problem: None,
        }),
        Err(error) => {
            let aside = dir.join(format!(
                "state.json.unreadable-{}",
                pvbus_bus::contract::now_ts()
            ));
            std::fs::rename(&path, &aside).map_err(io(&aside))?;
            Ok(Loaded {
                saved: BTreeMap::new(),
                problem: Some(format!(
                    "{}: {error}; moved to {}, relays start in auto",
                    path.display(),
                    aside.display()
                )),
            })
        }
    }
}

/// The history, oldest first, from the rotated file and the current one.
#[derive(Debug, Default)]
pub struct History {
    pub events: Vec<HistoryEvent>,
    /// Lines that could not be read (a torn last line after a power cut).
    pub skipped: Vec<String>,
}

pub fn read_history(dir: &Path) -> Result<History, StoreError> {
    let mut history = History::default();
    for name in [OLD_HISTORY_FILE, HISTORY_FILE] {
        let path = dir.join(name);
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(event) => history.events.push(event),
                Err(e) => {
                    history
                        .skipped
                        .push(format!("{} line {}: {e}", path.display(), index + 1))
                }
            }
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::SavedMode;

    fn event(relay: &str, ts: f64) -> HistoryEvent {
        HistoryEvent {
            ts,
            relay: relay.into(),
            prev_mode: RelayMode::AutoOff,
            mode: RelayMode::ForcedOn,
            prev_on: false,
            on: true,
            by: ReasonSource::User,
            text: "set to forced_on".into(),
        }
    }

    #[test]
    fn a_second_store_on_one_directory_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Store::open(dir.path(), 4096).unwrap();
        let Err(e) = Store::open(dir.path(), 4096) else {
            panic!("two stores opened one directory");
        };
        let text = e.to_string();
        assert!(
            text.contains(&dir.path().display().to_string())
                && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        Store::open(dir.path(), 4096).expect("free again once the first is closed");
    }

    #[test]
    fn state_survives_reopening_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let saved = BTreeMap::from([(
            "pump".to_string(),
            SavedRelay {
                mode: SavedMode::ForcedOn,
                running_override: None,
            },
        )]);
        {
            let (mut store, loaded) = Store::open(dir.path(), 4096).unwrap();
            assert!(loaded.saved.is_empty());
            store.save(&saved).unwrap();
        }
        let (_store, loaded) = Store::open(dir.path(), 4096).unwrap();
        assert_eq!(loaded.saved, saved);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
    }

    #[test]
    fn an_unreadable_state_file_is_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"{\"version\":1,\"relays\":").unwrap();
        let (_store, loaded) = Store::open(dir.path(), 4096).unwrap();
        let problem = loaded.problem.expect("reported");
        assert!(problem.contains("state.json"), "{problem}");
        assert!(loaded.saved.is_empty());
        let kept = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("state.json.unreadable-")
            })
            .count();
        assert_eq!(kept, 1, "the bad file is kept for a human");
    }

    #[test]
    fn history_rotates_and_stays_bounded_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), 4096).unwrap();
        for i in 0..200 {
            store.record(&event("pump", f64::from(i))).unwrap();
        }
        let total: u64 = ["history.jsonl", "history.1.jsonl"]
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len())
            .sum();
        assert!(total <= 2 * 4096 + 300, "{total}");
        // A power cut mid-write.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("history.jsonl"))
            .unwrap();
        file.write_all(b"{\"ts\":12").unwrap();
        let history = read_history(dir.path()).unwrap();
        assert_eq!(history.skipped.len(), 1);
        let ts: Vec<f64> = history.events.iter().map(|e| e.ts).collect();
        assert_eq!(*ts.last().unwrap(), 199.0, "newest kept");
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "oldest first");
        assert!(ts.len() > 20 && ts.len() < 200, "{}", ts.len());
    }
}
