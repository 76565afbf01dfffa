//! The on-disk copy of the last applied configuration, so a data plane restarted while its
//! control plane is away serves what it served before.
//!
//! `config.json` is replaced atomically (temp file, fsync, rename) and the generation it
//! replaces is kept as `config.json.1`. The first line of each file is a checksum of the rest,
//! so a torn or corrupted file is detected and the previous generation used instead.

use std::io::Write;
use std::path::{Path, PathBuf};

use gatehouse_shared::snapshot::ConfigSet;

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

#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCache { dir: dir.into() }
    }

    /// Writes `set` as the current generation, keeping the one it replaces.
    ///
    /// # Errors
    /// File-system failures.
    pub fn store(&self, set: &ConfigSet) -> Result<(), CacheError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
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
        let current = self.dir.join(CURRENT);
        if current.exists() {
            std::fs::rename(&current, self.dir.join(PREVIOUS)).map_err(io(&current))?;
        }
        std::fs::rename(&tmp, &current).map_err(io(&current))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The newest readable generation, if any: `config.json`, else `config.json.1`.
    pub fn load(&self) -> Option<ConfigSet> {
        for name in [CURRENT, PREVIOUS] {
            let path = self.dir.join(name);
            match read(&path) {
                Ok(set) => return Some(set),
                Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "ignoring unreadable configuration cache"),
            }
        }
        None
    }
}

fn read(path: &Path) -> Result<ConfigSet, CacheError> {
    let bytes = std::fs::read(path).map_err(|source| CacheError::Io { path: path.to_path_buf(), source })?;
    let corrupt = || CacheError::Corrupt(path.to_path_buf());
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or_else(corrupt)?;
    let expected = std::str::from_utf8(&bytes[..newline]).ok().and_then(|s| u64::from_str_radix(s, 16).ok());
    let body = &bytes[newline + 1..];
    if expected != Some(checksum(body)) {
        return Err(corrupt());
    }
    serde_json::from_slice(body).map_err(|_| corrupt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(revision: i64) -> ConfigSet {
        ConfigSet::new("epoch", revision)
    }

    #[test]
    fn keeps_the_previous_generation_and_falls_back_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        assert!(cache.load().is_none());
        cache.store(&set(1)).unwrap();
        cache.store(&set(2)).unwrap();
        assert_eq!(cache.load().unwrap().revision, 2);
        let current = dir.path().join(CURRENT);
        let mut bytes = std::fs::read(&current).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        std::fs::write(&current, bytes).unwrap();
        assert_eq!(cache.load().unwrap().revision, 1);
    }
}
