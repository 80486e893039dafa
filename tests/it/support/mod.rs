//! Fixtures shared by the test modules.

pub mod alertmanager;
pub mod daemon;
pub mod dashboard_queries;
pub mod echo_server;
pub mod process;
pub mod prometheus;
pub mod simulation;
pub mod tempdir;
