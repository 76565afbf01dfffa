# Gatehouse: one image holding both binaries, gatehouse-cp (control plane) and gatehouse-dp
# (data plane); the Helm chart in deploy/helm/gatehouse runs each with its own command.
#
#   docker build -t gatehouse:0.1.0 .
#   docker run --rm gatehouse:0.1.0 --help

# Build (binaries stripped: the release profile keeps line tables for profiling, which an
# image does not need): the toolchain image is pinned to the Rust release the workspace is built with; the
# gRPC code is generated with the protoc that a crate vendors, so no system package is needed.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gatehouse --bins \
    && install -s -D -m 0755 target/release/gatehouse-cp /out/gatehouse-cp \
    && install -s -D -m 0755 target/release/gatehouse-dp /out/gatehouse-dp

# Run: distroless (glibc, libgcc, CA certificates, no shell), as its unprivileged "nonroot"
# user (65532), which the chart's securityContext also uses.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gatehouse-cp /out/gatehouse-dp /usr/local/bin/
USER 65532:65532
WORKDIR /home/nonroot
# Data plane: proxy, proxy TLS, status. Control plane: Admin API, Admin API TLS, cluster.
EXPOSE 8000 8443 8100 8001 8444 8005
ENTRYPOINT ["/usr/local/bin/gatehouse-cp"]
CMD ["run"]
