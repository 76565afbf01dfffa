//! The generated CP ↔ DP sync contract (`proto/gatehouse/sync/v1/sync.proto`).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("gatehouse.sync.v1");
