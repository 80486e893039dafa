//! Logs: one global `tracing` subscriber writing text or JSON lines to stderr.
//!
//! The filter is a [`Targets`] list (`info`, `warn,cutover_auditor=debug`),
//! not `EnvFilter`: the same syntax for the common cases without a regex
//! engine in the build.

use std::str::FromStr;

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

pub use crate::config::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level or filter string is not understood.
    #[error(
        "log level {given:?}: {problem}; use error, warn, info, debug, trace, off, or directives like \"warn,cutover_auditor=debug\""
    )]
    BadFilter {
        /// The string as configured.
        given: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A global subscriber was installed before (only one per process).
    #[error("a global log subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the process-wide subscriber: `format` lines on stderr, filtered
/// by `level`.
pub fn init(format: LogFormat, level: &str) -> Result<(), TelemetryError> {
    let filter = filter(level)?;
    let registry = tracing_subscriber::registry();
    let installed = match format {
        LogFormat::Text => tracing::subscriber::set_global_default(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            ),
        ),
        LogFormat::Json => tracing::subscriber::set_global_default(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    // Fields at the top level, so `jq .cutover` and log
                    // pipelines find them without digging into `fields`.
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            ),
        ),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)
}

/// Parses a level or filter string into the filter [`init`] uses.
///
/// Stricter than `Targets` itself: a bare word must be a level, because
/// `Targets` would read a misspelt level (`inf`) as a target name and
/// silently log almost nothing.
pub fn filter(level: &str) -> Result<Targets, TelemetryError> {
    let bad = |problem: String| TelemetryError::BadFilter {
        given: level.to_owned(),
        problem,
    };
    let trimmed = level.trim();
    if trimmed.is_empty() {
        return Err(bad("empty".into()));
    }
    for directive in trimmed.split(',').map(str::trim) {
        let word = match directive.split_once('=') {
            Some((target, word)) if !target.trim().is_empty() => word.trim(),
            Some(_) => return Err(bad(format!("{directive:?} has no target before '='"))),
            None => directive,
        };
        if !LEVELS.contains(&word.to_ascii_lowercase().as_str()) {
            return Err(bad(format!("{word:?} is not a level")));
        }
    }
    Targets::from_str(trimmed).map_err(|e| bad(e.to_string()))
}

/// Level words a directive may use.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    /// `Ok(enabled)` lists (target, level, expected enabled) probes.
    fn check(level: &str, expected: Result<&[(&str, Level, bool)], &str>) {
        match (filter(level), expected) {
            (Ok(targets), Ok(probes)) => {
                for (target, lvl, enabled) in probes {
                    assert_eq!(
                        targets.would_enable(target, lvl),
                        *enabled,
                        "{level:?}: {target} at {lvl}"
                    );
                }
            }
            (Err(e), Err(message)) => {
                let text = e.to_string();
                assert!(text.contains(message), "{level:?}: {text}");
            }
            (got, want) => panic!("{level:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn levels_and_directives() {
        check(
            "info",
            Ok(&[
                ("cutover_auditor", Level::INFO, true),
                ("cutover_auditor", Level::DEBUG, false),
                ("hyper", Level::WARN, true),
            ]),
        );
        check(
            "WARN",
            Ok(&[("x", Level::WARN, true), ("x", Level::INFO, false)]),
        );
        check(
            "warn,cutover_auditor=debug",
            Ok(&[
                ("cutover_auditor::daemon", Level::DEBUG, true),
                ("cutover_auditor", Level::TRACE, false),
                ("hyper", Level::INFO, false),
            ]),
        );
        check("off", Ok(&[("x", Level::ERROR, false)]));
        check("inf", Err("\"inf\" is not a level"));
        check("", Err("empty"));
        check("=debug", Err("has no target"));
        check("cutover_auditor=loud", Err("\"loud\" is not a level"));
    }

    #[test]
    fn second_install_is_refused() {
        // Whichever test installs first wins; the second call must fail clearly.
        let first = init(LogFormat::Text, "error");
        let second = init(LogFormat::Json, "error");
        assert!(first.is_ok());
        assert!(matches!(second, Err(TelemetryError::AlreadyInstalled)));
    }
}
