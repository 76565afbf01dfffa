//! Generates the CP ↔ DP gRPC code from `proto/`, with the `protoc` that the
//! `protoc-bin-vendored` crate ships, so a fresh machine needs no system package.
//!
//! The client is generated from the contract as written. The server is declared by hand with
//! the same route: it writes `ControlPlaneFrame`, the wire twin of `ControlPlaneMessage`
//! whose deltas are bytes encoded once for every session (see the proto).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Encoded deltas are shared between sessions: `Bytes` clones are a reference count.
    config.bytes([".gatehouse.sync.v1.ControlPlaneFrame"]);
    tonic_prost_build::configure().build_server(false).compile_with_config(
        config,
        &["../proto/gatehouse/sync/v1/sync.proto"],
        &["../proto"],
    )?;
    let stream = tonic_build::manual::Method::builder()
        .name("stream")
        .route_name("Stream")
        .input_type("crate::proto::DataPlaneMessage")
        .output_type("crate::proto::ControlPlaneFrame")
        .codec_path("tonic_prost::ProstCodec")
        .client_streaming()
        .server_streaming()
        .build();
    let service =
        tonic_build::manual::Service::builder().name("ConfigSync").package("gatehouse.sync.v1").method(stream).build();
    tonic_build::manual::Builder::new().build_client(false).compile(&[service]);
    println!("cargo:rerun-if-changed=../proto/gatehouse/sync/v1/sync.proto");
    Ok(())
}
