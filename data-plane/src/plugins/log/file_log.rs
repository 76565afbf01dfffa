//! file-log (kong-0.14-plugins §7.5): one JSON line per request, appended to `path`. The file
//! is created owner-only (0600, it holds credentials as Kong logs them), kept open, and
//! opened again when it was renamed or removed underneath (log rotation) or when `reopen`
//! asks for it on every write.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{dropped, Batches, LogEntry, Outbox};
use crate::plugins::{BuildError, Plugin};

pub struct FileLog {
    path: PathBuf,
    reopen: bool,
    outbox: Outbox<Bytes>,
}

impl FileLog {
    pub fn new(config: &Value) -> Result<FileLog, BuildError> {
        let path = config.get("path").and_then(Value::as_str).ok_or_else(|| BuildError("path is required".into()))?;
        Ok(FileLog {
            path: PathBuf::from(path),
            reopen: config.get("reopen").and_then(Value::as_bool).unwrap_or(false),
            outbox: Outbox::new("file-log"),
        })
    }
}

fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Bytes of lines written with one call at most.
const BATCH: usize = 256 * 1024;

/// The file a batch goes to: kept open, and opened again when rotated away (or always, with
/// `reopen`).
struct Sink {
    path: PathBuf,
    reopen: bool,
    file: Option<(std::fs::File, u64)>,
}

impl Sink {
    fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        // The file we hold is still the one at `path` (not rotated away), unless asked to
        // open it every time.
        let current = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if self.reopen || self.file.as_ref().map(|(_, ino)| Some(*ino)) != Some(current) {
            self.file = None;
            let f = open(&self.path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open {}: {e}", self.path.display())))?;
            let ino = f.metadata()?.ino();
            self.file = Some((f, ino));
        }
        let Some((f, _)) = &mut self.file else { return Ok(()) };
        let written = f.write_all(batch);
        if written.is_err() {
            self.file = None;
        }
        written
    }
}

/// Gathers the lines that come within [`super::GATHER`] into one batch and writes it on a
/// blocking thread (file writes block); lines arriving meanwhile make the next batch. A busy
/// route so costs one write, and one hand-over to that thread, per batch rather than per
/// request.
async fn write_lines(path: PathBuf, reopen: bool, rx: mpsc::Receiver<Bytes>, failures: Arc<AtomicU64>) {
    let mut sink = Some(Sink { path, reopen, file: None });
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
    let mut lines = Batches::new(rx);
    loop {
        batch.clear();
        let take = |line: Bytes| {
            batch.extend_from_slice(&line);
            batch.push(b'\n');
            batch.len() < BATCH
        };
        let Some(lines_in_batch) = lines.gather(take).await else { return };
        let Some(mut s) = sink.take() else { return };
        let written = tokio::task::spawn_blocking(move || {
            let r = s.write(&batch);
            (s, batch, r)
        })
        .await;
        let Ok((s, b, result)) = written else { return };
        sink = Some(s);
        batch = b;
        if let Err(e) = result {
            for _ in 0..lines_in_batch {
                dropped(&failures, "file-log", &e);
            }
        }
    }
}

impl Plugin for FileLog {
    fn name(&self) -> &'static str {
        "file-log"
    }

    fn logs(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        self.outbox.push(entry.json(), |rx| write_lines(self.path.clone(), self.reopen, rx, self.outbox.counter()));
    }
}
