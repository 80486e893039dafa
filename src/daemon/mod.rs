//! The daemon: discovery, one scrape task per apiserver, evaluation,
//! persistence and the admin server, wired on one [`Clock`] with one
//! shutdown path.
//!
//! The decisions are made by the pure core under one lock ([`Core`], in
//! `core.rs`); the target list comes from `targets.rs` and the scrape tasks
//! from `supervise.rs`. The tasks only move data between the network, the
//! core and the disk.

mod core;
mod history_feed;
mod leader;
mod run;
mod supervise;
mod targets;

pub(crate) use self::core::Core;
pub use self::leader::{Decision, Lease, LeaseSpec, decide, micro_time};
pub use self::run::{
    DaemonError, Event, Faults, Options, PersistError, ResumeOutcome, Task, run, run_with_faults,
    run_with_resolver,
};
use self::run::{Shared, stopped};
pub use self::targets::{ResolveFn, Resolver};
