#!/usr/bin/env bash
# Builds the image cutover-auditor:<version of Cargo.toml> with buildah (no
# daemon, no base image: Dockerfile is FROM scratch around a static binary).
#   deploy/image/build.sh            # cargo build, then the image
#   SKIP_CARGO=1 deploy/image/build.sh   # reuse the binary already built
# Prints the image name on its last line. Needs buildah (apt-get install
# buildah); BUILDAH_ARGS adds global options (e.g. --storage-driver vfs).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
target=x86_64-unknown-linux-gnu
bin="target/$target/release/cutover-auditor"
if [ "${SKIP_CARGO:-0}" != 1 ]; then
  # crt-static: glibc linked in, so the binary needs no libc in the image.
  # Only the target is built with it (RUSTFLAGS with --target leaves build
  # scripts and proc macros alone); target/release is not touched.
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$target" --bin cutover-auditor
fi
[ -x "$bin" ] || { echo "build.sh: $bin missing (run without SKIP_CARGO=1)" >&2; exit 1; }
if ! ldd "$bin" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
  echo "build.sh: $bin is dynamically linked; FROM scratch needs a static binary" >&2
  exit 1
fi
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/cutover-auditor"
# The release profile keeps line tables for backtraces; the image does not
# need the rest of the debug sections.
if command -v strip >/dev/null; then strip --strip-debug "$ctx/cutover-auditor"; fi
cp LICENSE "$ctx/LICENSE"
image="cutover-auditor:$version"
# shellcheck disable=SC2086 # BUILDAH_ARGS is a list of options.
buildah ${BUILDAH_ARGS:-} build --quiet --layers=false \
  --file "$root/Dockerfile" \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --tag "$image" "$ctx" >/dev/null
echo "$image"
