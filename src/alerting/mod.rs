//! Direct push of the auditor's own alerts to Alertmanager (API v2), for
//! clusters where no Prometheus evaluates `deploy/rules/cutover-auditor.rules.yaml`.
//!
//! [`desired()`] is the pure half (`desired.rs`): from one
//! [`Status`](crate::status::Status) and `now` it returns the
//! alerts the rules file would have firing, with the same names, `severity`,
//! identifying labels (`cutover`; `apiserver` for scrape failures; `kind` and
//! `window` for invalidated tokens) and the annotation texts of the rules'
//! templates, rendered with Prometheus' `humanize*` formats so both channels
//! read alike. Two rules cannot be mirrored exactly from a single status and
//! say so in their text: `ServiceAccountTokenCutoverRegressed` counts all
//! regressions and names the last one instead of counting those of the last
//! hour, and `CutoverAuditorScrapeFailing` names the last scrape error instead
//! of the most frequent one. `CutoverAuditorDown` is not pushed at all: a
//! process cannot report its own absence, so only Prometheus can raise it;
//! nor are the rules on evaluation, discovery and state-write health, which
//! the status does not carry.
//! The daemon's alerts carry no `job`/`instance` of the auditor itself, so
//! when both Prometheus rules and the direct push are enabled Alertmanager
//! sees two alerts per condition; enable one of them.
//!
//! [`Pusher`] is the shell (`push.rs`): its own task, which posts the firing
//! alerts to every configured Alertmanager on every status change and every
//! re-send interval, and resolves alerts that stop firing. Alertmanager expires alerts
//! on its own wall clock, so `startsAt`/`endsAt` are wall-clock times even when
//! the daemon runs on an accelerated clock. Only `http://` Alertmanagers are
//! supported: the HTTP client carries no CA roots (`rustls-tls-manual-roots`),
//! and the in-cluster Alertmanager Service is plain HTTP.

mod desired;
mod push;

pub use desired::{
    Alert, FirstSeen, PENDING, REGRESSION_FIRES_FOR, RUNBOOK_BASE, SCRAPE_FAILING_AFTER, desired,
};
pub use push::{AlertingError, FIRST_BACKOFF, PUSH_ATTEMPTS, Pusher};
