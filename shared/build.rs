//! Generates the CP ↔ DP gRPC code from `proto/`, with the `protoc` that the
//! `protoc-bin-vendored` crate ships, so a fresh machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["../proto/gatehouse/sync/v1/sync.proto"],
        &["../proto"],
    )?;
    println!("cargo:rerun-if-changed=../proto/gatehouse/sync/v1/sync.proto");
    Ok(())
}
