//! The plugins folder: which files are plugins, and an inotify watch that says when one
//! is added, rewritten or removed (events from the kernel, no polling).
//!
//! A file is a plugin when it is a regular file (or a link to one) with an execute bit,
//! whose name does not start with `.` and does not end with `~`, `.disabled`, `.swp` or
//! `.dpkg-*` (editors and package managers leave such files). Its id is its name
//! without the last extension, made snake_case: `dht22-cellar.sh` -> `dht22_cellar`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Events on one name are gathered for this long before acting: `cp` and editors write
/// a file in several steps (create, write, chmod).
const SETTLE: Duration = Duration::from_millis(200);

/// The plugin id of a file name, or `None` when the name is not a plugin's.
pub fn plugin_id(name: &str) -> Option<String> {
    if name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".disabled")
        || name.ends_with(".swp")
        || name.contains(".dpkg-")
    {
        return None;
    }
    let stem = match name.rsplit_once('.') {
        Some((stem, _ext)) if !stem.is_empty() => stem,
        _ => name,
    };
    let id = crate::exec::snake_case(stem);
    (!id.is_empty() && id != crate::PROCESS).then_some(id)
}

/// Whether `path` is an executable regular file now.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The plugins in `dir`: (id, path), sorted by file name. Two files with the same id:
/// the first by name wins; the others are returned in the second list.
pub type Scan = (Vec<(String, PathBuf)>, Vec<PathBuf>);

pub fn scan(dir: &Path) -> std::io::Result<Scan> {
    let mut names: Vec<OsString> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let mut clashes = Vec::new();
    for name in names {
        let Some(id) = name.to_str().and_then(plugin_id) else {
            continue;
        };
        let path = dir.join(&name);
        if !is_executable(&path) {
            continue;
        }
        if found.iter().any(|(other, _)| *other == id) {
            clashes.push(path);
        } else {
            found.push((id, path));
        }
    }
    Ok((found, clashes))
}

/// Owns the inotify descriptor for as long as it is registered with tokio.
struct InotifyFd(Inotify);

/// Registers the inotify descriptor with tokio's reactor.
// tokio 1.54 made registration unsafe (the caller vouches that the descriptor stays open
// and the same while registered).
#[allow(unsafe_code)]
fn register(fd: InotifyFd) -> std::io::Result<AsyncFd<InotifyFd>> {
    // SAFETY: `InotifyFd` owns its descriptor (closed only when dropped, with the
    // AsyncFd) and always returns the same one.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// What happened to a name of the folder, once its events have settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    /// Its content was (re)written or it was moved in: a running plugin restarts.
    pub rewritten: bool,
}

/// The inotify watch of one folder.
pub struct FolderWatch {
    fd: AsyncFd<InotifyFd>,
    pending: HashMap<String, (Instant, bool)>,
    /// The kernel's queue overflowed: events were lost, the caller should rescan.
    overflowed: bool,
}

impl FolderWatch {
    pub fn new(dir: &Path) -> std::io::Result<FolderWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_CREATE,
        )?;
        Ok(FolderWatch {
            fd: register(InotifyFd(inotify))?,
            pending: HashMap::new(),
            overflowed: false,
        })
    }

    /// The next settled changes. `Ok(None)`: events were lost (queue overflow); rescan.
    pub async fn next(&mut self) -> std::io::Result<Option<Vec<Change>>> {
        loop {
            if std::mem::take(&mut self.overflowed) {
                return Ok(None);
            }
            let due = self.pending.values().map(|(at, _)| *at).min();
            tokio::select! {
                guard = self.fd.readable() => {
                    let mut guard = guard?;
                    match guard.get_inner().0.read_events() {
                        Ok(events) => {
                            for e in events {
                                if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                                    // The kernel dropped the watch: the folder was removed
                                    // or its file system unmounted.
                                    return Err(std::io::Error::other(
                                        "the plugins folder was removed (or unmounted)",
                                    ));
                                }
                                if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                                    self.overflowed = true;
                                    continue;
                                }
                                let Some(name) = e.name.and_then(|n| n.into_string().ok()) else {
                                    continue;
                                };
                                let rewritten = e.mask.intersects(
                                    AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO,
                                );
                                let entry = self.pending.entry(name).or_insert((Instant::now(), false));
                                entry.0 = Instant::now() + SETTLE;
                                entry.1 |= rewritten;
                            }
                        }
                        Err(Errno::EAGAIN) => guard.clear_ready(),
                        Err(e) => return Err(e.into()),
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<String> = self
                        .pending
                        .iter()
                        .filter(|(_, (at, _))| *at <= now)
                        .map(|(n, _)| n.clone())
                        .collect();
                    let changes: Vec<Change> = ready
                        .into_iter()
                        .filter_map(|name| {
                            let (_, rewritten) = self.pending.remove(&name)?;
                            Some(Change { name, rewritten })
                        })
                        .collect();
                    if !changes.is_empty() {
                        return Ok(Some(changes));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_names() {
        assert_eq!(
            plugin_id("dht22-cellar.sh").as_deref(),
            Some("dht22_cellar")
        );
        assert_eq!(plugin_id("probe").as_deref(), Some("probe"));
        assert_eq!(plugin_id("co2.meter.py").as_deref(), Some("co2_meter"));
        for not in [
            ".hidden",
            "probe~",
            "probe.sh.disabled",
            "x.swp",
            "p.dpkg-old",
            "plugins",
            "---.sh",
        ] {
            assert_eq!(plugin_id(not), None, "{not}");
        }
    }

    #[tokio::test]
    async fn the_watch_reports_settled_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = FolderWatch::new(dir.path()).unwrap();
        let path = dir.path().join("probe.sh");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let changes = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            changes,
            vec![Change {
                name: "probe.sh".into(),
                rewritten: true
            }]
        );
        assert_eq!(
            scan(dir.path()).unwrap().0,
            vec![("probe".into(), path.clone())]
        );
        std::fs::remove_file(&path).unwrap();
        let changes = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            changes,
            vec![Change {
                name: "probe.sh".into(),
                rewritten: false
            }]
        );
        // The folder itself goes: the watch says so instead of going silent.
        std::fs::remove_dir(dir.path()).unwrap();
        let gone = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap();
        assert!(gone.unwrap_err().to_string().contains("removed"));
    }
}
