//! The integration tests, one binary: each module was once its own test
//! binary (`tests/<module>.rs`); shared fixtures live in `support`, and nextest
//! names a test `it::<module>::<test>`.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a test may do I/O

mod support;

mod adversarial;
mod alert_rules;
mod alertmanager;
mod attribution;
mod check;
mod cli;
mod config;
mod daemon;
mod dashboard;
mod dashboard_live;
mod deploy;
mod discovery;
mod evidence;
mod exposition;
mod fault_matrix;
mod fuzz_regressions;
mod ha;
mod history;
mod inspect;
mod ledger_props;
mod metrics_contract;
mod scrape;
mod serve;
mod server;
mod simulator;
mod simulator_world;
mod timeline;
mod verdict;
