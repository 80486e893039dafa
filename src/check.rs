//! `cutover-auditor check`: a one-shot verdict for upgrade pipelines and
//! Argo CD / Flux hooks.
//!
//! Pure: [`judge`] takes the evidence (a [`Snapshot`] of the ledger and the
//! verdict trackers), the configuration and `now`, and returns a [`Report`]
//! whose [`Report::exit_code`] is the command's status. The verdicts are the
//! daemon's own: [`Core`] resumed from the snapshot and evaluated at `now`,
//! so `check` and `/api/v1/status` never disagree on the same evidence.
//!
//! Reading the evidence is the shell's part (`main.rs` reads the state file
//! read-only, never moving it aside). A history source plugs in as another
//! [`Origin`] producing the same kind of snapshot; 69 ([`EX_UNAVAILABLE`]) is
//! reserved for a source that cannot be reached.
//!
//! Nothing here turns missing evidence into `ready`: the ledger's coverage of
//! every instance ends at its last sample, so the time between the state
//! file's last write and `now` is unobserved and the verdict `blind` once it
//! exceeds the tolerance; a ledger with no current instance (empty, or all
//! departed) is `blind` (`no_targets`), as in the daemon; a
//! snapshot that claims samples after `now` is refused; and an empty list of
//! cutovers to judge is never "all ready".

use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use crate::config::Config;
use crate::daemon::Core;
use crate::inspect::Format;
use crate::metrics::{Metrics, MetricsError};
use crate::state::Snapshot;
use crate::status::{CutoverStatus, Status};
use crate::time::Timestamp;
use crate::verdict::State;

/// Every requested cutover is `ready`.
pub const EX_READY: u8 = 0;
/// At least one requested cutover is not `ready`.
pub const EX_NOT_READY: u8 = 1;
/// A bad command line or configuration (sysexits `EX_USAGE`).
pub const EX_USAGE: u8 = crate::inspect::EX_USAGE;
/// The state file is missing, unreadable or corrupt (sysexits `EX_NOINPUT`).
pub const EX_NOINPUT: u8 = crate::inspect::EX_NOINPUT;
/// The evidence source cannot be reached (sysexits `EX_UNAVAILABLE`);
/// reserved for history sources.
pub const EX_UNAVAILABLE: u8 = 69;
/// An internal error (sysexits `EX_SOFTWARE`).
pub const EX_SOFTWARE: u8 = 70;

/// Where the evidence came from, for the report and the error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A state file written by the daemon.
    StateFile(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::StateFile(path) => write!(f, "state file {}", path.display()),
        }
    }
}

/// Why no verdict could be given.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A `--cutover` name that the configuration does not judge.
    #[error("unknown cutover {name:?}: the configured cutovers are {known}")]
    UnknownCutover {
        /// The name given.
        name: String,
        /// The enabled cutovers, comma-separated.
        known: String,
    },
    /// The evidence could not be read or is not a state file.
    #[error("{origin}: {reason}")]
    Unreadable {
        /// The source.
        origin: Origin,
        /// What is wrong with it.
        reason: String,
    },
    /// The evidence ends after the time to judge at: judging it would use
    /// observations from the future.
    #[error(
        "{origin} holds evidence up to {} ({latest}), after the time judged, {} ({now}): \
         judge at or after it (--at), or fix the clock that is wrong",
        rfc3339(*latest),
        rfc3339(*now)
    )]
    EvidenceAfterNow {
        /// The source.
        origin: Origin,
        /// Its latest timestamp.
        latest: Timestamp,
        /// The time to judge at.
        now: Timestamp,
    },
    /// The metrics registry the daemon's evaluation updates could not be built.
    #[error("cannot set up the evaluation's metrics")]
    Metrics(#[from] MetricsError),
}

impl CheckError {
    /// The command's exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckError::UnknownCutover { .. } => EX_USAGE,
            CheckError::Unreadable { .. } | CheckError::EvidenceAfterNow { .. } => EX_NOINPUT,
            CheckError::Metrics(_) => EX_SOFTWARE,
        }
    }
}

/// The configuration `check` uses without `--config`: the built-in cutovers
/// with their default windows and tolerance, and the default state path.
/// (Its targets are never contacted by `check`.)
pub fn default_config() -> Config {
    Config::parse(
        "[targets.kubernetes]\napi_server = \"https://kubernetes.default.svc\"\n",
        |_| None,
    )
    .expect("the built-in configuration is valid")
}

/// The verdicts of the requested cutovers, and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The daemon's status at `now`, limited to the requested cutovers.
    pub status: Status,
    /// The source of the evidence.
    pub origin: Origin,
    /// When the evidence was taken (the state file's write).
    pub saved_at: Timestamp,
    /// The time judged at.
    pub now: Timestamp,
}

/// Judges the `requested` cutovers (all enabled ones when empty) from
/// `snapshot` at `now`, with the daemon's evaluation.
pub fn judge(
    config: &Config,
    snapshot: Snapshot,
    origin: Origin,
    requested: &[String],
    now: Timestamp,
) -> Result<Report, CheckError> {
    for name in requested {
        if !config.cutovers.iter().any(|c| c.name == name.as_str()) {
            let known: Vec<&str> = config.cutovers.iter().map(|c| c.name.as_str()).collect();
            return Err(CheckError::UnknownCutover {
                name: name.clone(),
                known: if known.is_empty() {
                    "none (all disabled)".to_owned()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    let latest = latest_evidence(&snapshot);
    if latest > now {
        return Err(CheckError::EvidenceAfterNow {
            origin,
            latest,
            now,
        });
    }
    let saved_at = snapshot.saved_at;
    let mut core = Core::start(config, Some(snapshot));
    let metrics = Metrics::new(env!("CARGO_PKG_VERSION"))?;
    let (mut status, _transitions) = core.evaluate(&config.cutovers, &metrics, now);
    if !requested.is_empty() {
        status
            .cutovers
            .retain(|c| requested.iter().any(|r| c.name == r.as_str()));
    }
    Ok(Report {
        status,
        origin,
        saved_at,
        now,
    })
}

/// The latest time the snapshot speaks of: its write, or a later sample.
fn latest_evidence(snapshot: &Snapshot) -> Timestamp {
    snapshot
        .ledger
        .instances()
        .flat_map(|(_, l)| [Some(l.last_seen()), l.gone_at()])
        .chain(
            snapshot
                .ledger
                .listed_unscraped()
                .flat_map(|(_, l)| [Some(l.since), l.gone_at]),
        )
        .flatten()
        .fold(snapshot.saved_at, Timestamp::max)
}

impl Report {
    /// True when there is at least one cutover and every one is `ready`.
    pub fn ready(&self) -> bool {
        !self.status.cutovers.is_empty()
            && self.status.cutovers.iter().all(|c| c.state == State::Ready)
    }

    /// 0 when [`ready`](Report::ready), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.ready() { EX_READY } else { EX_NOT_READY }
    }

    /// The report: `/api/v1/status` JSON, or short `key=value` lines.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let mut json = serde_json::to_string_pretty(&self.status)
                    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
                json.push('\n');
                json
            }
            Format::Text => self.render_text(),
        }
    }

    fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.status.cutovers {
            out.push_str(&cutover_line(c));
            out.push('\n');
        }
        let age = self.now.since(self.saved_at);
        let unobserved = if age.as_secs() > 0 {
            format!(
                ", {} earlier: nothing since was observed",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            )
        } else {
            String::new()
        };
        let source = format!(
            "judged at {} from {} saved at {}{unobserved}",
            rfc3339(self.now),
            self.origin,
            rfc3339(self.saved_at),
        );
        if self.status.cutovers.is_empty() {
            let _ = writeln!(
                out,
                "NOT READY: no cutover to judge (all disabled); {source}"
            );
        } else if self.ready() {
            let _ = writeln!(
                out,
                "READY: {} ready; {source}",
                names(self.status.cutovers.iter())
            );
        } else {
            let _ = writeln!(
                out,
                "NOT READY: {} not ready; {source}",
                names(
                    self.status
                        .cutovers
                        .iter()
                        .filter(|c| c.state != State::Ready)
                )
            );
        }
        out
    }
}

/// `legacy-tokens state=blind reason=target_down coverage=93.1% uses=0 ready_in=none blocking=a,b`
fn cutover_line(c: &CutoverStatus) -> String {
    let mut line = format!(
        "{} state={} reason={} window={} coverage={:.1}% uses={}",
        c.name,
        c.state,
        c.reason,
        human(c.window()),
        c.coverage_ratio * 100.0,
        c.increase
    );
    if let Some(n) = c.evidence_increase {
        let _ = write!(line, " evidence={n}");
    }
    if let Some(n) = c.unattributed {
        let _ = write!(line, " unattributed={n}");
    }
    match c.ready_in_seconds {
        Some(s) => {
            let _ = write!(line, " ready_in={}", human(Duration::from_secs(s)));
        }
        // Cannot turn ready without a change (a target up, a family back).
        None => line.push_str(" ready_in=none"),
    }
    if let Some(t) = c.last_use {
        let _ = write!(line, " last_use={}", rfc3339(t));
    }
    if !c.blocking_instances.is_empty() {
        let _ = write!(line, " blocking={}", c.blocking_instances.join(","));
    }
    line
}

fn names<'a>(cutovers: impl Iterator<Item = &'a CutoverStatus>) -> String {
    cutovers
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A duration to the second, as `6days 23h 59m` reads.
fn human(d: Duration) -> String {
    let d = Duration::from_secs(d.as_secs());
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string().replace(' ', "")
    }
}

/// `2026-12-04T18:00:00Z`, or the raw timestamp before the epoch.
fn rfc3339(t: Timestamp) -> String {
    match u64::try_from(t.as_millis()) {
        Ok(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::families::TokenKind;
    use crate::ledger::{Ledger, Observation, SeriesKey};
    use crate::state::FORMAT_VERSION;
    use crate::verdict::Reason;

    const HOUR: i64 = 3_600;
    const A: &str = "10.0.0.1:6443";

    fn config() -> Config {
        Config::parse(
            "[targets.kubernetes]\napi_server = \"https://kubernetes.default.svc\"\n\
             [cutovers.legacy-tokens]\nwindow = \"1h\"\n\
             [cutovers.legacy-auto-tokens]\nenabled = false\n\
             [cutovers.token-expiry-extension]\nwindow = \"1h\"\n",
            |_| None,
        )
        .expect("valid config")
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(1_800_000_000 + s)
    }

    /// One instance scraped every 30 s over `[0, until]`, quiet, with valid
    /// tokens growing; saved at `until`.
    fn snapshot(until: i64, legacy_at_end: u64) -> Snapshot {
        let mut ledger = Ledger::default();
        let mut s = 0;
        while s <= until {
            let legacy = if s == until { legacy_at_end } else { 0 };
            ledger.observe(
                A,
                t(s),
                Observation {
                    start_time: Some(t(-HOUR)),
                    values: BTreeMap::from([
                        (SeriesKey::family(TokenKind::Legacy.family()), legacy),
                        (SeriesKey::family(TokenKind::Stale.family()), 0),
                        (SeriesKey::family(TokenKind::Valid.family()), s as u64),
                    ]),
                },
            );
            s += 30;
        }
        Snapshot {
            version: FORMAT_VERSION,
            saved_at: t(until),
            ledger,
            trackers: BTreeMap::new(),
        }
    }

    fn origin() -> Origin {
        Origin::StateFile("/var/lib/cutover-auditor/state.json".into())
    }

    #[test]
    fn a_quiet_observed_window_is_ready_and_exits_0() {
        let r = judge(&config(), snapshot(2 * HOUR, 0), origin(), &[], t(2 * HOUR)).unwrap();
        assert_eq!(r.status.cutovers.len(), 2, "the disabled one is not judged");
        assert!(r.ready(), "{}", r.render(Format::Text));
        assert_eq!(r.exit_code(), 0);
        let text = r.render(Format::Text);
        assert!(
            text.contains("legacy-tokens state=ready reason=quiet_for_window"),
            "{text}"
        );
        assert!(
            text.contains("READY: legacy-tokens,token-expiry-extension ready"),
            "{text}"
        );
    }

    #[test]
    fn time_after_the_last_write_is_unobserved() {
        // Within the tolerance (5 min) the verdict holds; beyond it the
        // instance is down and nothing is ready.
        let ok = judge(
            &config(),
            snapshot(2 * HOUR, 0),
            origin(),
            &[],
            t(2 * HOUR + 240),
        );
        assert!(ok.unwrap().ready());
        let r = judge(
            &config(),
            snapshot(2 * HOUR, 0),
            origin(),
            &[],
            t(2 * HOUR + 600),
        )
        .unwrap();
        assert_eq!(r.exit_code(), 1);
        for c in &r.status.cutovers {
            assert_eq!(c.state, State::Blind, "{c:?}");
            assert_eq!(c.blocking_instances, vec![A.to_owned()]);
        }
        // A day later still: never ready on evidence that stopped.
        let r = judge(
            &config(),
            snapshot(2 * HOUR, 0),
            origin(),
            &[],
            t(26 * HOUR),
        )
        .unwrap();
        assert!(!r.ready());
        assert!(r.status.cutovers.iter().all(|c| c.coverage_ratio == 0.0));
    }

    #[test]
    fn a_state_whose_instances_all_left_is_not_ready() {
        let mut s = snapshot(2 * HOUR, 0);
        s.ledger.remove(A, t(2 * HOUR));
        // Right after the write and ten minutes on: an instance that joined
        // since would be unknown, so nothing is ready.
        for at in [2 * HOUR, 2 * HOUR + 600] {
            let r = judge(&config(), s.clone(), origin(), &[], t(at)).unwrap();
            assert_eq!(r.exit_code(), 1, "{}", r.render(Format::Text));
            for c in &r.status.cutovers {
                assert_eq!(
                    (c.state, c.reason),
                    (State::Blind, Reason::NoTargets),
                    "{c:?}"
                );
                assert_eq!(c.ready_in_seconds, None);
            }
        }
    }

    #[test]
    fn an_empty_state_or_nothing_to_judge_is_never_ready() {
        let empty = Snapshot {
            version: FORMAT_VERSION,
            saved_at: t(0),
            ..Snapshot::default()
        };
        let r = judge(&config(), empty, origin(), &[], t(0)).unwrap();
        assert_eq!(r.exit_code(), 1);
        assert!(r.status.cutovers.iter().all(|c| c.state == State::Blind));
        let mut none = config();
        none.cutovers.clear();
        let r = judge(&none, snapshot(2 * HOUR, 0), origin(), &[], t(2 * HOUR)).unwrap();
        assert_eq!(r.exit_code(), 1);
        assert!(
            r.render(Format::Text)
                .contains("NOT READY: no cutover to judge")
        );
    }

    #[test]
    fn the_default_config_judges_the_builtins() {
        let names: Vec<_> = default_config()
            .cutovers
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "legacy-tokens",
                "legacy-auto-tokens",
                "token-expiry-extension"
            ]
        );
        assert_eq!(
            default_config().cutovers,
            crate::verdict::CutoverSpec::builtin()
        );
    }

    #[test]
    fn evidence_after_now_is_refused() {
        let err = judge(&config(), snapshot(2 * HOUR, 0), origin(), &[], t(HOUR)).unwrap_err();
        assert_eq!(err.exit_code(), EX_NOINPUT);
        assert!(
            err.to_string().contains("state.json holds evidence up to"),
            "{err}"
        );
        // A sample later than the recorded write counts as the evidence's end.
        let mut s = snapshot(2 * HOUR, 0);
        s.saved_at = t(HOUR);
        let err = judge(&config(), s, origin(), &[], t(HOUR + 60)).unwrap_err();
        assert!(
            matches!(err, CheckError::EvidenceAfterNow { latest, .. } if latest == t(2 * HOUR))
        );
    }

    #[test]
    fn unknown_or_disabled_cutovers_are_usage_errors() {
        for name in ["legacy-auto-tokens", "nope"] {
            let err = judge(
                &config(),
                snapshot(HOUR, 0),
                origin(),
                &[name.into()],
                t(HOUR),
            )
            .unwrap_err();
            assert_eq!(err.exit_code(), EX_USAGE);
            assert!(
                err.to_string()
                    .contains("legacy-tokens, token-expiry-extension"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_use_names_the_cutover_and_the_reason() {
        let r = judge(
            &config(),
            snapshot(2 * HOUR, 3),
            origin(),
            &["legacy-tokens".into()],
            t(2 * HOUR),
        )
        .unwrap();
        assert_eq!(r.status.cutovers.len(), 1);
        assert_eq!(r.exit_code(), 1);
        let text = r.render(Format::Text);
        assert!(
            text.contains("legacy-tokens state=in_use reason=quiet_counter_increased window=1h coverage=100.0% uses=3"),
            "{text}"
        );
        assert!(text.contains("ready_in=1h"), "{text}");
        assert!(
            text.contains("NOT READY: legacy-tokens not ready"),
            "{text}"
        );
    }
}
