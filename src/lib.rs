//! cutover-auditor: tells a Kubernetes platform team, with evidence, when it is
//! safe to cut over away from legacy ServiceAccount tokens.
//!
//! # Layout
//!
//! The pure core takes bytes, samples and `now` as arguments and does no I/O:
//!
//! - [`time`]: timestamps as integers, so time is a parameter.
//! - [`families`]: the kube-apiserver metric families and token kinds.
//! - [`window`]: interval arithmetic for windows and coverage.
//! - [`ledger`]: per instance and series, exact increments, resets, holes.
//! - [`verdict`]: per cutover, the state, its reason and its numbers.
//! - [`endpointslice`]: the EndpointSlice JSON shape used for discovery.
//!
//! The edge reads time from a [`clock::Clock`] (real, or accelerated for
//! `demo`), so the simulator and the daemon can share one clock:
//!
//! - [`simulator`]: simulated kube-apiservers (TLS, tokens, pages, discovery,
//!   scripted clients, ground truth) for `simulate`, `demo` and the tests.
//!
//! See `ARCHITECTURE.md` for the codemap and the invariants.

pub mod clock;
pub mod endpointslice;
pub mod families;
pub mod ledger;
pub mod simulator;
pub mod time;
pub mod verdict;
pub mod window;
