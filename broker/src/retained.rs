//! The retained-message store of the embedded broker: what MQTT says a broker keeps (the last
//! retained message per topic), bounded, matched against subscription filters, and saved to
//! disk atomically (temp file, fsync, rename, fsync of the directory), only when something
//! changed and at most once per flush interval so that an SD card is not written every second.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

/// File name of the saved store inside the broker's data directory.
pub const RETAINED_FILE: &str = "retained.bin";
const MAGIC: &[u8] = b"PVBUS-RETAINED-1\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    pub payload: Bytes,
    pub qos: u8,
}

/// What happened to a retained publish offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    Cleared,
    Unchanged,
    /// Not kept: the store is at its topic or byte limit.
    RefusedFull,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a pvbus retained-message file (bad header)")]
    BadHeader { path: PathBuf },
    #[error("{path}: truncated or corrupt record at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        what: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot save retained messages to {path}: {source}")]
pub struct SaveError {
    pub path: PathBuf,
    pub source: io::Error,
}

#[derive(Debug, Default)]
struct Inner {
    messages: BTreeMap<String, Retained>,
    bytes: usize,
    /// Changed since the last save.
    dirty: bool,
}

/// Shared between every client relay and the flusher.
#[derive(Debug)]
pub struct RetainedStore {
    inner: Mutex<Inner>,
    changed: Notify,
    /// One save at a time: the flusher and the shutdown save share the temp file.
    saving: Mutex<()>,
    max_topics: usize,
    max_bytes: usize,
}

impl RetainedStore {
    pub fn new(max_topics: usize, max_bytes: usize) -> Self {
        RetainedStore {
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            saving: Mutex::new(()),
            max_topics,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated (each change is
        // one map operation), so a poisoned lock is still sound to use.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a publish that carried the retain flag (or a will with will-retain): a
    /// non-empty payload replaces the topic's message, an empty one clears it (MQTT 3.1.1
    /// §3.3.1.3).
    pub fn apply(&self, topic: &str, payload: Bytes, qos: u8) -> StoreOutcome {
        let mut inner = self.lock();
        let old_size = inner
            .messages
            .get(topic)
            .map(|old| topic.len() + old.payload.len());
        let outcome = if payload.is_empty() {
            match inner.messages.remove(topic) {
                Some(_) => {
                    inner.bytes -= old_size.unwrap_or(0);
                    StoreOutcome::Cleared
                }
                None => StoreOutcome::Unchanged,
            }
        } else {
            let new = Retained { payload, qos };
            if inner.messages.get(topic) == Some(&new) {
                StoreOutcome::Unchanged
            } else {
                let new_size = topic.len() + new.payload.len();
                let bytes_after = inner.bytes - old_size.unwrap_or(0) + new_size;
                let topics_after = inner.messages.len() + usize::from(old_size.is_none());
                if bytes_after > self.max_bytes || topics_after > self.max_topics {
                    StoreOutcome::RefusedFull
                } else {
                    inner.messages.insert(topic.to_owned(), new);
                    inner.bytes = bytes_after;
                    StoreOutcome::Stored
                }
            }
        };
        if matches!(outcome, StoreOutcome::Stored | StoreOutcome::Cleared) {
            inner.dirty = true;
            drop(inner);
            self.changed.notify_one();
        }
        outcome
    }

    /// Every retained message whose topic matches `filter`, in topic order.
    pub fn matching(&self, filter: &str) -> Vec<(String, Retained)> {
        let inner = self.lock();
        inner
            .messages
            .iter()
            .filter(|(topic, _)| topic_matches(filter, topic))
            .map(|(topic, message)| (topic.clone(), message.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the content with what was loaded from disk (not marked dirty).
    fn restore(&self, messages: BTreeMap<String, Retained>) {
        let mut inner = self.lock();
        inner.bytes = messages
            .iter()
            .map(|(topic, message)| topic.len() + message.payload.len())
            .sum();
        inner.messages = messages;
        inner.dirty = false;
    }

    /// Saves the store if it changed since the last save. Returns whether it wrote.
    pub fn save_if_dirty(&self, dir: &Path) -> Result<bool, SaveError> {
        let _one_at_a_time = self
            .saving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = {
            let mut inner = self.lock();
            if !inner.dirty {
                return Ok(false);
            }
            inner.dirty = false;
            inner.messages.clone()
        };
        if let Err(error) = save(dir, &snapshot) {
            // Keep the change pending so that the next flush tries again.
            self.lock().dirty = true;
            return Err(error);
        }
        Ok(true)
    }

    /// Loads `dir/retained.bin` into the store. A missing file is an empty store.
    pub fn load(&self, dir: &Path) -> Result<usize, LoadError> {
        let path = dir.join(RETAINED_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(LoadError::Io { path, source }),
        };
        let messages = decode(&bytes).map_err(|failure| match failure {
            Decode::BadHeader => LoadError::BadHeader { path: path.clone() },
            Decode::Corrupt { offset, what } => LoadError::Corrupt {
                path: path.clone(),
                offset,
                what,
            },
        })?;
        let count = messages.len();
        self.restore(messages);
        Ok(count)
    }

    /// Saves at most once per `interval`, and only after a change: waits for a change, waits
    /// `interval` more so that a burst of changes is written once, then saves. Runs until the
    /// task is dropped; the final save on shutdown is the caller's.
    pub async fn flush_loop(self: Arc<Self>, dir: PathBuf, interval: Duration) {
        loop {
            self.changed.notified().await;
            tokio::time::sleep(interval).await;
            let store = Arc::clone(&self);
            let dir = dir.clone();
            let saved = tokio::task::spawn_blocking(move || store.save_if_dirty(&dir)).await;
            match saved {
                Ok(Ok(true)) => tracing::debug!("retained messages saved"),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "retained messages not saved; will retry");
                    // Ask for another round even if nothing else changes.
                    self.changed.notify_one();
                }
                Err(error) => tracing::error!(%error, "retained-message save task failed"),
            }
        }
    }
}

/// MQTT topic matching, shared with the client library.
pub use pvbus_bus::topics::topic_matches;

fn encode(messages: &BTreeMap<String, Retained>) -> Vec<u8> {
    let size: usize = messages
        .iter()
        .map(|(topic, message)| 2 + topic.len() + 1 + 4 + message.payload.len())
        .sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(messages.len() as u32).to_be_bytes());
    for (topic, message) in messages {
        // Topics and payloads arrived in MQTT packets, so they fit u16 and u32 lengths.
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
        out.push(message.qos);
        out.extend_from_slice(&(message.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&message.payload);
    }
    out
}

enum Decode {
    BadHeader,
    Corrupt { offset: usize, what: &'static str },
}

fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Retained>, Decode> {
    if !bytes.starts_with(MAGIC) {
        return Err(Decode::BadHeader);
    }
    let mut at = MAGIC.len();
    let take = |at: &mut usize, len: usize, what| {
        let slice = bytes
            .get(*at..*at + len)
            .ok_or(Decode::Corrupt { offset: *at, what })?;
        *at += len;
        Ok::<_, Decode>(slice)
    };
    let count = u32::from_be_bytes(
        take(&mut at, 4, "record count")?
            .try_into()
            .unwrap_or([0; 4]),
    );
    let mut messages = BTreeMap::new();
    for _ in 0..count {
        let record_at = at;
        let topic_len = u16::from_be_bytes(
            take(&mut at, 2, "topic length")?
                .try_into()
                .unwrap_or([0; 2]),
        );
        let topic = std::str::from_utf8(take(&mut at, usize::from(topic_len), "topic")?)
            .map_err(|_| Decode::Corrupt {
                offset: record_at,
                what: "topic is not UTF-8",
            })?
            .to_owned();
        let qos = take(&mut at, 1, "QoS")?[0];
        if qos > 2 {
            return Err(Decode::Corrupt {
                offset: at - 1,
                what: "QoS above 2",
            });
        }
        let payload_len = u32::from_be_bytes(
            take(&mut at, 4, "payload length")?
                .try_into()
                .unwrap_or([0; 4]),
        );
        let payload = Bytes::copy_from_slice(take(&mut at, payload_len as usize, "payload")?);
        messages.insert(topic, Retained { payload, qos });
    }
    if at != bytes.len() {
        return Err(Decode::Corrupt {
            offset: at,
            what: "trailing bytes after the last record",
        });
    }
    Ok(messages)
}

/// Writes the store so that a power cut at any moment leaves either the old or the new file.
fn save(dir: &Path, messages: &BTreeMap<String, Retained>) -> Result<(), SaveError> {
    let path = dir.join(RETAINED_FILE);
    let temp = dir.join(format!("{RETAINED_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(&encode(messages))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, &path)?;
        // The rename itself is durable only once the directory is synced.
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| SaveError { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_payload_clears_and_limits_refuse() {
        let store = RetainedStore::new(2, 1000);
        assert_eq!(store.apply("a", Bytes::from("1"), 0), StoreOutcome::Stored);
        assert_eq!(
            store.apply("a", Bytes::from("1"), 0),
            StoreOutcome::Unchanged
        );
        assert_eq!(store.apply("b", Bytes::from("2"), 1), StoreOutcome::Stored);
        assert_eq!(
            store.apply("c", Bytes::from("3"), 1),
            StoreOutcome::RefusedFull
        );
        assert_eq!(store.apply("a", Bytes::new(), 0), StoreOutcome::Cleared);
        assert_eq!(store.apply("c", Bytes::from("3"), 1), StoreOutcome::Stored);
        let big = Bytes::from(vec![0u8; 1000]);
        assert_eq!(store.apply("d", big, 0), StoreOutcome::RefusedFull);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn save_then_load_round_trips_and_writes_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = RetainedStore::new(100, 1 << 20);
        store.apply("pvbus/x/state", Bytes::from("{\"v\":1}"), 1);
        store.apply("pvbus/bin", Bytes::from(vec![0u8, 255, 10]), 0);
        assert!(store.save_if_dirty(dir.path()).unwrap());
        assert!(!store.save_if_dirty(dir.path()).unwrap());
        assert!(!dir.path().join("retained.bin.tmp").exists());

        let again = RetainedStore::new(100, 1 << 20);
        assert_eq!(again.load(dir.path()).unwrap(), 2);
        assert_eq!(again.matching("#"), store.matching("#"));
    }

    #[test]
    fn corrupt_file_is_reported_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = RetainedStore::new(100, 1 << 20);
        store.apply("pvbus/x", Bytes::from("hello"), 0);
        store.save_if_dirty(dir.path()).unwrap();
        let path = dir.path().join(RETAINED_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 2);
        fs::write(&path, &bytes).unwrap();
        let err = RetainedStore::new(100, 1 << 20)
            .load(dir.path())
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("retained.bin") && text.contains("payload"),
            "{text}"
        );

        fs::write(&path, b"garbage").unwrap();
        let err = RetainedStore::new(100, 1 << 20)
            .load(dir.path())
            .unwrap_err();
        assert!(matches!(err, LoadError::BadHeader { .. }), "{err}");
    }
}
