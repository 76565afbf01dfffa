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

use super::{dropped, LogEntry, Outbox};
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

/// Writes lines as they come, on a blocking thread (file writes block).
async fn write_lines(path: PathBuf, reopen: bool, mut rx: mpsc::Receiver<Bytes>, failures: Arc<AtomicU64>) {
    let _ = tokio::task::spawn_blocking(move || {
        let mut file: Option<(std::fs::File, u64)> = None;
        while let Some(line) = rx.blocking_recv() {
            // The file we hold is still the one at `path` (not rotated away), unless asked
            // to open it every time.
            let current = std::fs::metadata(&path).ok().map(|m| m.ino());
            if reopen || file.as_ref().map(|(_, ino)| Some(*ino)) != Some(current) {
                file = match open(&path).and_then(|f| f.metadata().map(|m| (f, m.ino()))) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        dropped(&failures, "file-log", &format!("cannot open {}: {e}", path.display()));
                        continue;
                    }
                };
            }
            if let Some((f, _)) = &mut file {
                if let Err(e) = f.write_all(&line) {
                    dropped(&failures, "file-log", &e);
                    file = None;
                }
            }
        }
    })
    .await;
}

impl Plugin for FileLog {
    fn name(&self) -> &'static str {
        "file-log"
    }

    fn logs(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        let mut line = entry.record().to_string().into_bytes();
        line.push(b'\n');
        let (path, reopen, failures) = (self.path.clone(), self.reopen, self.outbox.counter());
        self.outbox.push(Bytes::from(line), move |rx| write_lines(path, reopen, rx, failures));
    }
}
