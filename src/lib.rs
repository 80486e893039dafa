//! cutover-auditor: tells a Kubernetes platform team, with evidence, when it is
//! safe to cut over away from legacy ServiceAccount tokens.
//!
//! # Layout
//!
//! The pure core takes bytes, samples and `now` as arguments and does no I/O:
//!
//! - [`time`]: timestamps as integers, so time is a parameter.
//! - [`families`]: the kube-apiserver metric families and token kinds.
//! - [`exposition`]: the streaming extractor, from page bytes (plain or
//!   gzip) to the samples of the watched families.
//! - [`window`]: interval arithmetic for windows and coverage.
//! - [`ledger`]: per instance and series, exact increments, resets, holes.
//! - [`verdict`]: per cutover, the state, its reason and its numbers.
//! - [`endpointslice`]: the EndpointSlice JSON shape used for discovery.
//! - [`inspect`]: what `cutover-auditor inspect` prints for one page.
//! - [`check`]: the verdict `cutover-auditor check` gives from saved evidence.
//! - [`history`]: Prometheus-compatible history (raw samples) fed to the
//!   ledger as scrapes would be; its HTTP client is shell.
//!
//! The shell around it:
//!
//! - [`config`]: the configuration file, validated once.
//! - [`state`]: the state file, written atomically, moved aside when corrupt.
//! - [`state_store`]: where the state is kept: the file, or a ConfigMap.
//! - [`kubeapi`]: JSON requests to the Kubernetes API for the daemon's own objects.
//! - [`status`]: the daemon's status as data, behind every surface.
//! - [`metrics`]: every exported metric, registered in one place.
//! - [`credentials`]: the bearer token file, re-read as the kubelet rotates it.
//! - [`discovery`]: apiserver addresses from the `kubernetes` EndpointSlices.
//! - [`scrape`]: one HTTPS scrape of one instance, streamed into the extractor.
//! - [`server`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`,
//!   `/api/v1/status`, `/`).
//! - [`status_page`]: the HTML status page, a pure function of the status.
//! - [`telemetry`]: the log subscriber (text or JSON lines).
//! - [`daemon`]: the tasks that tie it together, with one shutdown path.
//! - [`clock`]: real or accelerated time, shared by the simulator and the
//!   daemon so `demo` runs both on one clock.
//! - [`alerting`]: the alerts of the rules file computed from the status,
//!   pushed directly to Alertmanager when `[alertmanager]` is configured.
//! - [`attribution`]: who uses legacy tokens (token Secrets, workloads),
//!   opt-in, next to each cutover.
//! - [`simulator`]: simulated kube-apiservers (TLS, tokens, pages, discovery,
//!   scripted clients, ground truth) for `simulate`, `demo` and the tests.
//!
//! See `ARCHITECTURE.md` for the codemap and the invariants.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alerting;
pub mod attribution;
pub mod check;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod cutover;
pub mod daemon;
pub mod discovery;
pub mod endpointslice;
pub mod exposition;
pub mod families;
pub mod gofmt;
pub mod history;
pub mod inspect;
pub mod kubeapi;
pub mod ledger;
pub mod metrics;
pub mod scrape;
pub mod server;
pub mod simulator;
pub mod state;
pub mod state_store;
pub mod status;
pub mod status_page;
pub mod telemetry;
pub mod time;
pub mod timeline;
pub mod verdict;
pub mod window;
