//! Following the control plane: one gRPC stream, reconnected with exponential backoff and
//! jitter. Each batch is applied to a copy of the configuration, compiled aside and swapped in
//! whole; a batch that does not compile is refused (NACK) and the last good configuration
//! keeps serving. Applied configurations are written to the disk cache by a background task.

mod client;
pub mod disk_cache;

pub use client::{spawn, Identity};
