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
//! - [`inspect`]: what `cutover-auditor inspect` prints for one page.
//!
//! See `ARCHITECTURE.md` for the codemap and the invariants.

pub mod exposition;
pub mod families;
pub mod inspect;
pub mod time;
