#!/usr/bin/env bash
# Runs every check of the project on a fresh machine: installs what the tests
# need (Debian packages; we are root in CI), then formatting, lints and the
# whole test suite under cargo-nextest. Any failing step fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real components the tests start on loopback ports: Prometheus/promtool and
# Alertmanager/amtool, plus yamllint for the manifests.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v yamllint >/dev/null || missing+=(yamllint)
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-all: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start their services; the tests start their own.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
  (systemctl stop "$svc" || service "$svc" stop || true) >/dev/null 2>&1
done

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --all-targets --no-fail-fast
