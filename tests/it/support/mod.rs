//! Fixtures shared by the test modules.

pub mod daemon;
pub mod dashboard_queries;
pub mod tempdir;
