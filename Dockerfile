# syntax=docker/dockerfile:1
# The cutover-auditor image: one static binary FROM scratch, no shell, no
# package manager, no libc. Build it with deploy/image/build.sh (buildah, no
# daemon), which first builds the binary:
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu
# and then runs this file on a build context holding only that binary and
# the LICENSE, so no base image has to be fetched.
# Run: the Deployment in deploy/base passes `serve --config ...`.
FROM scratch

ARG VERSION
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z

LABEL org.opencontainers.image.title="cutover-auditor" \
      org.opencontainers.image.description="Tells a Kubernetes platform team, with evidence, when it is safe to cut over away from legacy ServiceAccount tokens." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/cutover-auditor/cutover-auditor" \
      org.opencontainers.image.documentation="https://github.com/cutover-auditor/cutover-auditor/blob/main/README.md"

COPY LICENSE /licenses/LICENSE
COPY cutover-auditor /usr/local/bin/cutover-auditor

# uid/gid 65532 ("nonroot" by convention); the Deployment sets the same
# runAsUser so the kubelet can verify runAsNonRoot.
USER 65532:65532
EXPOSE 9877
ENTRYPOINT ["/usr/local/bin/cutover-auditor"]
CMD ["serve", "--config", "/etc/cutover-auditor/config.toml"]
