//! The on-disk copy of the applied configuration, so a data plane restarted while its control
//! plane is away serves what it served before.
//!
//! A generation is one file, `config.json`: a full image of the configuration as its first
//! record, then a record per delta applied after it. A delta costs an append of its own size
//! rather than a rewrite of the whole configuration (megabytes at ten thousand routes). The
//! writer starts a new generation from the newest configuration once the deltas have grown to
//! half the image; the generation it replaces is kept as `config.json.1`. A new generation is
//! written to a temporary file, fsynced and renamed over the current one, so each generation
//! is replaced whole.
//!
//! Every record carries a checksum and its length. A torn or damaged delta ends the replay
//! (the records after it are discarded); a damaged image falls back to the previous generation.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use gatehouse_shared::proto::Change;
use gatehouse_shared::snapshot::ConfigSet;
use serde::{Deserialize, Serialize};

const CURRENT: &str = "config.json";
const PREVIOUS: &str = "config.json.1";

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

/// One applied delta as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub epoch: String,
    pub from: i64,
    pub revision: i64,
    pub changes: Vec<LoggedChange>,
}

/// A [`Change`] in the cache (the wire type has no serde form).
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

    /// About how many bytes the record takes.
    pub fn size(&self) -> u64 {
        self.changes.iter().map(|c| c.entity.len() + c.id.len() + c.document.len() + 48).sum::<usize>() as u64 + 64
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

/// `body` framed as a record: a line with its checksum and length, the body, a newline.
fn frame(out: &mut Vec<u8>, body: &[u8]) {
    let _ = writeln!(out, "{:016x} {}", checksum(body), body.len());
    out.extend_from_slice(body);
    out.push(b'\n');
}

impl DiskCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCache { dir: dir.into() }
    }

    /// Starts a new generation whose image is `set`, keeping the current one as the previous
    /// generation if its image is sound (a damaged one is not kept over a sound previous
    /// generation). Returns the image's size.
    ///
    /// # Errors
    /// File-system failures.
    pub fn store(&self, set: &ConfigSet) -> Result<u64, CacheError> {
        // The configuration holds every credential: owner-only, from creation.
        gatehouse_shared::private_fs::create_dir(&self.dir).map_err(io(&self.dir))?;
        let body = serde_json::to_vec(set).map_err(|e| CacheError::Io { path: self.dir.clone(), source: e.into() })?;
        let mut bytes = Vec::with_capacity(body.len() + 32);
        frame(&mut bytes, &body);
        let tmp = self.dir.join("config.json.tmp");
        {
            let mut f = gatehouse_shared::private_fs::create_file(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        let current = self.dir.join(CURRENT);
        if read_image(&current).is_ok() {
            std::fs::rename(&current, self.dir.join(PREVIOUS)).map_err(io(&current))?;
        }
        // A crash before this rename leaves the previous generation, whole.
        std::fs::rename(&tmp, &current).map_err(io(&current))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        Ok(body.len() as u64)
    }

    /// Appends `deltas` to the current generation (they follow its image or its last delta,
    /// in order). Returns how many bytes the deltas took. Only after [`DiskCache::store`] in
    /// the same process: a generation read at start may end in a torn record, after which
    /// nothing appended would ever be read.
    ///
    /// # Errors
    /// File-system failures.
    pub fn append(&self, deltas: &[Delta]) -> Result<u64, CacheError> {
        let path = self.dir.join(CURRENT);
        let mut bytes = Vec::new();
        for d in deltas {
            let body = serde_json::to_vec(d).map_err(|e| CacheError::Io { path: path.clone(), source: e.into() })?;
            frame(&mut bytes, &body);
        }
        let mut f = gatehouse_shared::private_fs::append_file(&path).map_err(io(&path))?;
        f.write_all(&bytes).map_err(io(&path))?;
        // The file exists since `store` (its directory entry fsynced there): its data and size
        // are what must reach the disk.
        f.sync_data().map_err(io(&path))?;
        Ok(bytes.len() as u64)
    }

    /// The newest readable generation with its deltas replayed, if any: the current one, else
    /// the previous one.
    pub fn load(&self) -> Option<ConfigSet> {
        for name in [CURRENT, PREVIOUS] {
            let path = self.dir.join(name);
            match read_generation(&path) {
                Ok(set) => return Some(set),
                Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "ignoring unreadable configuration cache"),
            }
        }
        None
    }
}

/// The first record of `bytes` and what follows it. With `legacy`, also an image written
/// before deltas were logged: a bare checksum line and the image up to the file's end.
fn first_record(bytes: &[u8], legacy: bool) -> Option<(&[u8], &[u8])> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..newline]).ok()?;
    let (sum, body, rest) = match header.split_once(' ') {
        Some((sum, len)) => {
            // A damaged length can be any number: checked, so it reads as damage, not a panic.
            let end = (newline + 1).checked_add(len.parse::<usize>().ok()?)?;
            if bytes.get(end) != Some(&b'\n') {
                return None;
            }
            (sum, &bytes[newline + 1..end], &bytes[end + 1..])
        }
        None if legacy => (header, &bytes[newline + 1..], &bytes[bytes.len()..]),
        None => return None,
    };
    (u64::from_str_radix(sum, 16).ok()? == checksum(body)).then_some((body, rest))
}

/// Whether the generation at `path` starts with a sound image (its first record only).
fn read_image(path: &Path) -> Result<(), CacheError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io(path))?;
    first_record(&bytes, true).map(|_| ()).ok_or_else(|| CacheError::Corrupt(path.to_path_buf()))
}

fn read_generation(path: &Path) -> Result<ConfigSet, CacheError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let corrupt = || CacheError::Corrupt(path.to_path_buf());
    let (image, mut rest) = first_record(&bytes, true).ok_or_else(corrupt)?;
    let mut set: ConfigSet = serde_json::from_slice(image).map_err(|_| corrupt())?;
    // Read in key order, the tables' leaves are half full: a data plane restarted from its
    // cache would hold more than one that took a snapshot.
    set.refill();
    while let Some((body, next)) = first_record(rest, false) {
        let Ok(delta) = serde_json::from_slice::<Delta>(body) else { break };
        if delta.epoch != set.epoch || delta.from != set.revision {
            break;
        }
        let mut applied = set.clone();
        if applied.apply(&delta.changes()).is_err() {
            tracing::warn!(revision = delta.revision, "a cached delta does not apply; serving the revision before it");
            break;
        }
        applied.revision = delta.revision;
        set = applied;
        rest = next;
    }
    Ok(set)
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
    fn a_torn_or_damaged_delta_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        cache.store(&set(1)).unwrap();
        let path = dir.path().join(CURRENT);
        let image = std::fs::metadata(&path).unwrap().len() as usize;
        cache.append(&[delta(1, "a"), delta(2, "b")]).unwrap();
        let whole = std::fs::read(&path).unwrap();
        // Torn: the last record cut short.
        std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        assert_eq!(cache.load().unwrap().revision, 2);
        // Damaged: a byte of the first delta flipped.
        let mut bytes = whole.clone();
        bytes[image + 30] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(cache.load().unwrap().revision, 1);
    }

    #[test]
    fn a_damaged_image_falls_back_to_the_previous_generation_and_its_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        cache.store(&set(1)).unwrap();
        cache.append(&[delta(1, "a")]).unwrap();
        let mut second = set(2);
        second.apply(&[service("a")]).unwrap();
        cache.store(&second).unwrap();
        cache.append(&[delta(2, "b")]).unwrap();
        assert_eq!(cache.load().unwrap().revision, 3);
        let damage = || {
            let path = dir.path().join(CURRENT);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[30] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
        };
        damage();
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.revision, 2, "the previous image with the delta logged after it");
        assert!(loaded.get("services", "a").is_some() && loaded.get("services", "b").is_none());
        // A new generation does not push the sound previous one out for the damaged one.
        cache.store(&set(4)).unwrap();
        damage();
        assert_eq!(cache.load().unwrap().revision, 2);
    }

    #[test]
    fn deltas_of_another_epoch_or_after_a_gap_are_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        cache.store(&set(5)).unwrap();
        cache.append(&[delta(5, "a"), delta(7, "gap"), delta(8, "after")]).unwrap();
        let loaded = cache.load().unwrap();
        assert_eq!(loaded.revision, 6);
        assert!(loaded.get("services", "gap").is_none() && loaded.get("services", "after").is_none());
        cache.store(&set(1)).unwrap();
        cache.append(&[Delta::new("other", 1, 2, &[service("x")])]).unwrap();
        assert_eq!(cache.load().unwrap().revision, 1);
    }

    #[test]
    fn a_delta_whose_length_field_is_absurd_reads_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        cache.store(&set(1)).unwrap();
        let mut f = gatehouse_shared::private_fs::append_file(&dir.path().join(CURRENT)).unwrap();
        writeln!(f, "0000000000000000 {}", usize::MAX).unwrap();
        assert_eq!(cache.load().unwrap().revision, 1);
    }

    #[test]
    fn an_image_written_before_deltas_were_logged_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let body = serde_json::to_vec(&set(9)).unwrap();
        let mut bytes = format!("{:016x}\n", checksum(&body)).into_bytes();
        bytes.extend_from_slice(&body);
        std::fs::write(dir.path().join(CURRENT), bytes).unwrap();
        assert_eq!(DiskCache::new(dir.path()).load().unwrap().revision, 9);
    }
}
