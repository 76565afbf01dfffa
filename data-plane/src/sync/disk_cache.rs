//! The on-disk copy of the applied configuration, so a data plane restarted while its control
//! plane is away serves what it served before.
//!
//! A generation is a full image (`config.json`) and the log of the deltas applied after it
//! (`deltas.log`): a delta costs an append of its own size rather than a rewrite of the whole
//! configuration (megabytes at ten thousand routes). When the log has grown to half the
//! image, the writer starts a new generation from the newest configuration; the one it
//! replaces is kept (`config.json.1` with `deltas.log.1`).
//!
//! Images and log records each carry a checksum. A torn or damaged log record ends the replay
//! (the records after it are discarded), and a damaged image falls back to the previous
//! generation. Images are replaced atomically (temporary file, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use gatehouse_shared::proto::Change;
use gatehouse_shared::snapshot::ConfigSet;
use serde::{Deserialize, Serialize};

const IMAGE: &str = "config.json";
const LOG: &str = "deltas.log";
/// The suffix of the previous generation's files.
const PREVIOUS: &str = ".1";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache i/o on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cache file {0} is corrupt")]
    Corrupt(PathBuf),
}

/// FNV-1a, 64 bits: enough to notice a damaged file, not a security measure.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// One applied delta as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub epoch: String,
    pub from: i64,
    pub revision: i64,
    pub changes: Vec<LoggedChange>,
}

/// A [`Change`] in the log (the wire type has no serde form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedChange {
    entity: String,
    id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    document: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

impl Delta {
    pub fn new(epoch: &str, from: i64, revision: i64, changes: &[Change]) -> Delta {
        let changes = changes
            .iter()
            .map(|c| LoggedChange {
                entity: c.entity.clone(),
                id: c.id.clone(),
                document: c.document.clone(),
                deleted: c.deleted,
            })
            .collect();
        Delta { epoch: epoch.to_string(), from, revision, changes }
    }

    fn changes(&self) -> Vec<Change> {
        self.changes
            .iter()
            .map(|c| Change {
                entity: c.entity.clone(),
                id: c.id.clone(),
                document: c.document.clone(),
                deleted: c.deleted,
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |source| CacheError::Io { path, source }
}

impl DiskCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCache { dir: dir.into() }
    }

    fn path(&self, name: &str, previous: bool) -> PathBuf {
        self.dir.join(if previous { format!("{name}{PREVIOUS}") } else { name.to_string() })
    }

    /// Starts a new generation whose image is `set`, keeping the one it replaces. Returns the
    /// image's size.
    ///
    /// # Errors
    /// File-system failures.
    pub fn store(&self, set: &ConfigSet) -> Result<u64, CacheError> {
        // The configuration holds every credential: owner-only, from creation.
        gatehouse_shared::private_fs::create_dir(&self.dir).map_err(io(&self.dir))?;
        let body = serde_json::to_vec(set).map_err(|e| CacheError::Io { path: self.dir.clone(), source: e.into() })?;
        let tmp = self.dir.join("config.json.tmp");
        {
            let mut f = gatehouse_shared::private_fs::create_file(&tmp).map_err(io(&tmp))?;
            writeln!(f, "{:016x}", checksum(&body)).map_err(io(&tmp))?;
            f.write_all(&body).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        // The log first: a crash between the renames leaves the current image without its
        // deltas (an older revision, still whole), never an image with another's deltas.
        let (log, kept_log) = (self.path(LOG, false), self.path(LOG, true));
        match std::fs::rename(&log, &kept_log) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::remove_file(&kept_log) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&kept_log)(e)),
                _ => {}
            },
            Err(e) => return Err(io(&log)(e)),
        }
        let image = self.path(IMAGE, false);
        if image.exists() {
            std::fs::rename(&image, self.path(IMAGE, true)).map_err(io(&image))?;
        }
        std::fs::rename(&tmp, &image).map_err(io(&image))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(body.len() as u64)
    }

    /// Appends `deltas` to the current generation's log (they follow its image or the last
    /// record, in order). Returns the log's size. Only after [`DiskCache::store`] in the same
    /// process: a log read at start may end in a torn record, after which nothing appended
    /// would ever be read.
    ///
    /// # Errors
    /// File-system failures.
    pub fn append(&self, deltas: &[Delta]) -> Result<u64, CacheError> {
        let path = self.path(LOG, false);
        let mut bytes = Vec::new();
        for d in deltas {
            let body = serde_json::to_vec(d).map_err(|e| CacheError::Io { path: path.clone(), source: e.into() })?;
            let _ = writeln!(bytes, "{:016x} {}", checksum(&body), body.len());
            bytes.extend_from_slice(&body);
            bytes.push(b'\n');
        }
        let mut f = gatehouse_shared::private_fs::append_file(&path).map_err(io(&path))?;
        f.write_all(&bytes).map_err(io(&path))?;
        f.sync_data().map_err(io(&path))?;
        Ok(f.metadata().map_err(io(&path))?.len())
    }

    /// The newest readable generation with its log replayed, if any: the current one, else
    /// the previous one.
    pub fn load(&self) -> Option<ConfigSet> {
        for previous in [false, true] {
            let path = self.path(IMAGE, previous);
            match read_image(&path) {
                Ok(mut set) => {
                    replay(&mut set, &self.path(LOG, previous));
                    return Some(set);
                }
                Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "ignoring unreadable configuration cache"),
            }
        }
        None
    }
}

fn read_image(path: &Path) -> Result<ConfigSet, CacheError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let corrupt = || CacheError::Corrupt(path.to_path_buf());
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or_else(corrupt)?;
    let expected = std::str::from_utf8(&bytes[..newline]).ok().and_then(|s| u64::from_str_radix(s, 16).ok());
    let body = &bytes[newline + 1..];
    if expected != Some(checksum(body)) {
        return Err(corrupt());
    }
    serde_json::from_slice(body).map_err(|_| corrupt())
}

/// The log's records, in order, up to the first that is torn or damaged.
fn records(bytes: &[u8]) -> Vec<Delta> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
        let header = std::str::from_utf8(&rest[..newline]).ok().and_then(|h| h.split_once(' '));
        let Some((sum, len)) =
            header.and_then(|(s, l)| Some((u64::from_str_radix(s, 16).ok()?, l.parse::<usize>().ok()?)))
        else {
            break;
        };
        let body_end = newline + 1 + len;
        let Some(body) = rest.get(newline + 1..body_end) else { break };
        if checksum(body) != sum || rest.get(body_end) != Some(&b'\n') {
            break;
        }
        let Ok(delta) = serde_json::from_slice(body) else { break };
        out.push(delta);
        rest = &rest[body_end + 1..];
    }
    out
}

/// Applies the log's records that follow `set`'s revision; stops at a gap or a record that
/// does not apply.
fn replay(set: &mut ConfigSet, log: &Path) {
    let Ok(bytes) = std::fs::read(log) else { return };
    for delta in records(&bytes) {
        if delta.epoch != set.epoch || delta.from != set.revision {
            if delta.revision <= set.revision && delta.epoch == set.epoch {
                continue;
            }
            break;
        }
        let mut next = set.clone();
        if next.apply(&delta.changes()).is_err() {
            tracing::warn!(revision = delta.revision, "a cached delta does not apply; serving the revision before it");
            break;
        }
        next.revision = delta.revision;
        *set = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(revision: i64) -> ConfigSet {
        ConfigSet::new("epoch", revision)
    }

    fn service(id: &str) -> Change {
        Change {
            entity: "services".into(),
            id: id.into(),
            document: format!(r#"{{"id":"{id}","host":"example.com"}}"#),
            deleted: false,
        }
    }

    fn delta(from: i64, id: &str) -> Delta {
        Delta::new("epoch", from, from + 1, &[service(id)])
    }

    #[test]
    fn deltas_replay_over_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        assert!(cache.load().is_none());
        cache.store(&set(1)).unwrap();
        cache.append(&[delta(1, "a"), delta(2, "b")]).unwrap();
        cache.append(&[delta(3, "c")]).unwrap();
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.revision, 4);
        assert!(["a", "b", "c"].iter().all(|id| loaded.get("services", id).is_some()));
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        cache.store(&set(1)).unwrap();
        cache.append(&[delta(1, "a"), delta(2, "b")]).unwrap();
        let log = dir.path().join(LOG);
        let whole = std::fs::read(&log).unwrap();
        // Torn: the last record cut short.
        std::fs::write(&log, &whole[..whole.len() - 5]).unwrap();
        assert_eq!(cache.load().unwrap().revision, 2);
        // Damaged: a byte of the first record flipped.
        let mut bytes = whole.clone();
        bytes[30] ^= 0x01;
        std::fs::write(&log, bytes).unwrap();
        assert_eq!(cache.load().unwrap().revision, 1);
    }

    #[test]
    fn a_damaged_image_falls_back_to_the_previous_generation_and_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        cache.store(&set(1)).unwrap();
        cache.append(&[delta(1, "a")]).unwrap();
        let mut second = set(2);
        second.apply(&[service("a")]).unwrap();
        cache.store(&second).unwrap();
        cache.append(&[delta(2, "b")]).unwrap();
        assert_eq!(cache.load().unwrap().revision, 3);
        let image = dir.path().join(IMAGE);
        let mut bytes = std::fs::read(&image).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        std::fs::write(&image, bytes).unwrap();
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.revision, 2, "the previous image with the delta logged after it");
        assert!(loaded.get("services", "a").is_some() && loaded.get("services", "b").is_none());
    }

    #[test]
    fn records_of_another_epoch_or_after_a_gap_are_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        cache.store(&set(5)).unwrap();
        cache.append(&[delta(3, "old"), delta(5, "a"), delta(7, "gap"), delta(8, "after")]).unwrap();
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.revision, 6);
        assert!(loaded.get("services", "old").is_none() && loaded.get("services", "gap").is_none());
        cache.store(&set(1)).unwrap();
        cache.append(&[Delta::new("other", 1, 2, &[service("x")])]).unwrap();
        assert_eq!(cache.load().unwrap().revision, 1);
    }
}
