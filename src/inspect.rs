//! What `cutover-auditor inspect` prints for one page, and the exit code of
//! each failure. Pure: `main.rs` opens the input and writes the output.

use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use crate::exposition::{ExpositionError, Page, ReadPageError};
use crate::families::{self, TokenKind};

/// Exit status for a bad command line (sysexits `EX_USAGE`).
pub const EX_USAGE: u8 = 64;
/// Exit status for a page that is readable but wrong, e.g. a malformed
/// watched line (sysexits `EX_DATAERR`).
pub const EX_DATAERR: u8 = 65;
/// Exit status for input that cannot be read at all: missing file, read
/// error, corrupt or truncated gzip (sysexits `EX_NOINPUT`).
pub const EX_NOINPUT: u8 = 66;

/// Input without a single exposition line (empty, HTML, JSON, an error
/// text): reporting six absent families for it would read as "this
/// apiserver has no counters". Exit 65.
#[derive(Debug, thiserror::Error)]
#[error(
    "no Prometheus text exposition found ({lines} lines read, none a sample or a HELP/TYPE line)"
)]
pub struct NoExposition {
    /// Lines read.
    pub lines: u64,
}

/// Accepts a page with at least one exposition line, watched or not.
pub fn check(page: &Page) -> Result<(), NoExposition> {
    if !page.has_exposition {
        return Err(NoExposition { lines: page.lines });
    }
    Ok(())
}

/// The output format of `inspect`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned `name value` lines for people.
    #[default]
    Text,
    /// One JSON object for scripts.
    Json,
}

/// An unknown `--format` value.
#[derive(Debug, thiserror::Error)]
#[error("unknown format {0:?} (expected text or json)")]
pub struct UnknownFormat(String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

/// Renders the page in `format`, newline-terminated.
pub fn render(page: &Page, format: Format) -> String {
    match format {
        Format::Text => render_text(page),
        Format::Json => format!("{}\n", to_json(page)),
    }
}

/// The JSON report: `families` (present token families and their sums over
/// series), `absent` (token families with no sample), `process_start_time_seconds`
/// and `kubernetes_version` (null when absent).
pub fn to_json(page: &Page) -> Value {
    let mut present = Map::new();
    for (family, value) in token_sums(page) {
        if let Some(value) = value {
            present.insert(family.to_owned(), number(value));
        }
    }
    json!({
        "families": present,
        "absent": absent_tokens(page),
        "process_start_time_seconds": page.process_start_time(),
        "kubernetes_version": page.kubernetes_version(),
    })
}

/// The text report: one `name value` line per token family (`absent` when
/// the page has none), then the start time and the version.
pub fn render_text(page: &Page) -> String {
    let width = TokenKind::ALL
        .iter()
        .map(|k| k.family().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (family, value) in token_sums(page) {
        let shown = value.map_or_else(|| "absent".to_owned(), |v| v.to_string());
        let _ = writeln!(out, "{family:<width$}  {shown}");
    }
    let start = page
        .process_start_time()
        .map_or_else(|| "absent".to_owned(), |v| v.to_string());
    let _ = writeln!(out, "{:<width$}  {start}", families::PROCESS_START_TIME);
    let version = page.kubernetes_version().unwrap_or("absent");
    let _ = writeln!(out, "{:<width$}  {version}", "kubernetes_version");
    let absent = absent_tokens(page);
    if !absent.is_empty() {
        let _ = writeln!(out, "\nabsent (unknown, not zero): {}", absent.join(", "));
    }
    out
}

/// The exit status for a failed read: 66 when the input cannot be read
/// (I/O error, corrupt or truncated gzip), 65 when the page is read but a
/// watched line is malformed, the page is too large or carries more
/// series of the watched families than the caps.
pub fn exit_code(err: &ReadPageError) -> u8 {
    match err {
        ReadPageError::Io(_) | ReadPageError::Page(ExpositionError::Gzip(_)) => EX_NOINPUT,
        ReadPageError::Page(
            ExpositionError::Malformed { .. }
            | ExpositionError::LineTooLong { .. }
            | ExpositionError::TooLarge { .. }
            | ExpositionError::TooManySeries { .. },
        ) => EX_DATAERR,
    }
}

/// Counters are integers: write `192`, not `192.0`. JSON has no NaN/Inf:
/// those become null.
fn number(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() < EXACT {
        // Exact: integral and within the range where f64 holds every integer.
        json!(value as i64)
    } else {
        json!(value)
    }
}

fn token_sums(page: &Page) -> impl Iterator<Item = (&'static str, Option<f64>)> + '_ {
    TokenKind::ALL
        .into_iter()
        .map(|k| (k.family(), page.family_sum(k.family())))
}

fn absent_tokens(page: &Page) -> Vec<&'static str> {
    TokenKind::ALL
        .into_iter()
        .map(TokenKind::family)
        .filter(|f| !page.is_present(f))
        .collect()
}
