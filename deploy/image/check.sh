#!/usr/bin/env bash
# Checks the image deploy/image/build.sh made, without running a container
# engine: hadolint on the Dockerfile; the image's config (OCI labels, version
# tag from Cargo.toml, non-root user, exec-form entrypoint); its files (the
# binary and the LICENSE, nothing else); and the image's own binary, taken
# from the mounted image, running `demo --for 5m` (simulated apiservers on an
# accelerated clock, about 5 s) with the output checked.
# Usage: deploy/image/check.sh [IMAGE]   (default cutover-auditor:<version>)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
image="${1:-cutover-auditor:$version}"
b() {
  # shellcheck disable=SC2086 # BUILDAH_ARGS is a list of options.
  buildah ${BUILDAH_ARGS:-} "$@"
}
fail() { echo "image check: $*" >&2; exit 1; }

hadolint Dockerfile || fail "hadolint found problems in Dockerfile"

config="$(b inspect --type image "$image")"
python3 - "$version" "$config" <<'PY' || fail "image config of $image"
import json, sys
version, config = sys.argv[1], json.loads(sys.argv[2])["OCIv1"]["config"]
labels = config.get("Labels") or {}
want = {
    "org.opencontainers.image.title": "cutover-auditor",
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.licenses": "Apache-2.0",
}
for k, v in want.items():
    assert labels.get(k) == v, f"label {k}={labels.get(k)!r}, want {v!r}"
for k in ("source", "revision", "created", "description", "documentation"):
    assert labels.get(f"org.opencontainers.image.{k}"), f"label org.opencontainers.image.{k} missing"
assert config.get("User") == "65532:65532", f"user {config.get('User')!r}"
assert config.get("Entrypoint") == ["/usr/local/bin/cutover-auditor"], config.get("Entrypoint")
assert config.get("Cmd") == ["serve", "--config", "/etc/cutover-auditor/config.toml"], config.get("Cmd")
assert "9877/tcp" in (config.get("ExposedPorts") or {}), config.get("ExposedPorts")
PY

ctr="$(b from --quiet --pull-never "$image")"
cleanup() { b umount "$ctr" >/dev/null 2>&1 || true; b rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT
mnt="$(b mount "$ctr")"
files="$(cd "$mnt" && find . -type f | sort | tr '\n' ' ')"
[ "$files" = "./licenses/LICENSE ./usr/local/bin/cutover-auditor " ] ||
  fail "unexpected files in the image: $files"
cmp -s "$mnt/licenses/LICENSE" LICENSE || fail "the image's LICENSE differs from LICENSE"

out="$(mktemp)"
trap 'cleanup; rm -f "$out"' EXIT
timeout 120 "$mnt/usr/local/bin/cutover-auditor" demo --listen 127.0.0.1:0 --for 5m >"$out" 2>&1 ||
  { cat "$out" >&2; fail "the image's binary: demo --for 5m failed"; }
for expect in 'cutover-auditor demo: 3 simulated apiservers' \
  'status page: http://127.0.0.1:' \
  'legacy-tokens: (start) -> ' \
  ' -> in_use (quiet_counter_increased' \
  '--for 5m reached: stopping'; do
  grep -qF -- "$expect" "$out" || { cat "$out" >&2; fail "demo output lacks: $expect"; }
done
echo "image check: $image OK ($(wc -c <"$mnt/usr/local/bin/cutover-auditor") byte binary, demo --for 5m as expected)"
