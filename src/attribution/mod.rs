//! Who still uses legacy tokens: token Secrets (metadata only), the Pods and
//! workloads that mount them, next to every cutover's verdict.
//!
//! - [`secrets`] (pure): the labels of token Secrets, classified.
//! - [`workloads`] (pure): which Pods mount which Secrets, and their owners.
//! - [`report`] (pure): the per-cutover attribution of one evaluation.
//! - [`audit`] (pure): audit event annotations, aggregated in bounded memory.
//! - [`audit_file`] (shell): follows an audit log through rotation and restarts.
//! - [`client`] (shell): GET-only requests to the Kubernetes API.
//! - [`task`] (shell): the listing loop that fills `Status::attribution`.

pub mod audit;
pub mod audit_file;
pub mod client;
pub mod report;
pub mod secrets;
pub mod task;
pub mod workloads;

pub use report::{Attribution, CutoverAttribution};
pub use task::Attributor;
