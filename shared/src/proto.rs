//! The generated CP ↔ DP sync contract (`proto/gatehouse/sync/v1/sync.proto`).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("gatehouse.sync.v1");

/// The control plane's side of the stream, writing [`ControlPlaneFrame`]s (see `build.rs`).
pub mod server {
    tonic::include_proto!("gatehouse.sync.v1.ConfigSync");
}
