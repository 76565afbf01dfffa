//! Types and rules that both Gatehouse planes must agree on: entity validation in Kong 0.14's
//! shapes, plugin configuration schemas, and the small helpers (UUIDs, hosts, paths) they use.
//!
//! The control plane validates with these before it stores anything; the data plane trusts
//! what it receives but compiles it with the same types.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod credential;
pub mod enabled_headers;
pub mod entity;
pub mod idle;
pub mod link;
pub mod lookup;
pub mod otlp_metrics;
pub mod private_fs;
pub mod process;
pub mod proto;
pub mod schema;
pub mod snapshot;
pub mod telemetry;
pub mod upstream;
pub mod validate;

pub use entity::{Schema, Violation};
