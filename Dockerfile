# syntax=docker/dockerfile:1
# Build:  docker build -t cutover-auditor:0.1.0 .
# Run:    the Deployment in deploy/base passes `serve --config ...`.

# The builder's Debian release matches the runtime's (glibc 2.36), so the
# dynamically linked binary runs on distroless cc-debian12.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# --locked: build exactly the reviewed Cargo.lock. The cache mounts only
# speed up rebuilds; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cutover-auditor \
    && cp target/release/cutover-auditor /cutover-auditor

# No shell, no package manager: only glibc, libgcc, CA certificates and the
# binary. The image's `nonroot` user is uid/gid 65532, which the Deployment
# also sets (runAsUser) so runAsNonRoot can be verified by the kubelet.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /cutover-auditor /usr/local/bin/cutover-auditor
USER 65532:65532
EXPOSE 9877
ENTRYPOINT ["/usr/local/bin/cutover-auditor"]
CMD ["serve", "--config", "/etc/cutover-auditor/config.toml"]
