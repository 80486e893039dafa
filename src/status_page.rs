//! The status page at `/`: one server-rendered HTML page a platform engineer
//! reads at a glance. No JavaScript, no external assets: inline CSS and text,
//! every value escaped, refreshed by the browser every 30 seconds.
//!
//! [`render`] is a pure function of the [`Status`] and `now`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::status::{CutoverStatus, Status, TargetHealth};
use crate::time::Timestamp;
use crate::verdict::{Reason, State};

/// The whole page for `status` as seen at `now`.
pub fn render(status: &Status, now: Timestamp) -> String {
    let mut html = String::with_capacity(8 * 1024);
    html.push_str(HEAD);
    html.push_str("<body>\n<header><h1>cutover-auditor</h1><p class=\"meta\">");
    match status.evaluated_at {
        Some(at) => {
            let _ = write!(html, "evaluated {}", escape(&ago(at, now)));
        }
        None => html.push_str("first evaluation pending"),
    }
    let _ = write!(
        html,
        " &middot; {} apiserver instance{} &middot; version {}</p></header>\n<main>\n",
        status.targets.len(),
        if status.targets.len() == 1 { "" } else { "s" },
        escape(&status.version)
    );

    if let Some(line) = history_line(status) {
        let _ = writeln!(html, "<p class=\"meta\">{}</p>", escape(&line));
    }
    html.push_str("<section class=\"cutovers\">\n");
    if status.cutovers.is_empty() {
        html.push_str("<p>No cutover is enabled in the configuration.</p>\n");
    }
    for c in &status.cutovers {
        cutover_card(&mut html, c, status, now);
    }
    html.push_str("</section>\n");
    who_section(&mut html, status);

    targets_table(&mut html, &status.targets, now);
    html.push_str(
        "</main>\n<footer>Machine-readable: <a href=\"/api/v1/status\">/api/v1/status</a> &middot; \
         <a href=\"/metrics\">/metrics</a></footer>\n</body>\n</html>\n",
    );
    html
}

/// "Who": per cutover, the workloads, ServiceAccounts and token Secrets
/// using a legacy token inside its window, and under a ready cutover the
/// Secrets safe to delete; nothing when attribution is off.
fn who_section(html: &mut String, status: &Status) {
    let Some(a) = &status.attribution else {
        return;
    };
    html.push_str("<section class=\"who\">\n<h2>Who</h2>\n");
    for reason in &a.unavailable {
        let _ = writeln!(html, "<p class=\"down\">{}</p>", escape(reason));
    }
    if let Some(since) = a.tracking_since {
        let _ = writeln!(
            html,
            "<p class=\"meta\">Legacy token use tracked since {since} (evidence: the Secrets' last-used labels, day precision).</p>"
        );
    }
    for c in &a.cutovers {
        let state = status
            .cutovers
            .iter()
            .find(|s| s.name.label() == c.name)
            .map(|s| s.state);
        let _ = writeln!(html, "<h3>{}</h3>", escape(&c.name));
        if let Some(note) = &c.note {
            let _ = writeln!(html, "<p class=\"meta\">{}</p>", escape(note));
        }
        if !c.who.is_empty() {
            html.push_str("<table><tr><th>who</th><th>ServiceAccount</th><th>Secret</th><th>last used</th><th>evidence</th></tr>\n");
            for w in &c.who {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>last-used label</td></tr>",
                    escape(&w.summary),
                    escape(
                        &w.service_account
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    ),
                    escape(&w.secret.to_string()),
                    w.last_used
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                );
            }
            html.push_str("</table>\n");
            if c.who_omitted > 0 {
                let _ = writeln!(html, "<p class=\"meta\">and {} more</p>", c.who_omitted);
            }
        } else if state != Some(State::Ready) && c.note.is_none() {
            html.push_str("<p>No token Secret was used inside the window.</p>\n");
        }
        if !c.audit.is_empty() {
            html.push_str("<p>In the audit log (inside the window):</p>\n<ul>\n");
            for a in &c.audit {
                let _ = writeln!(
                    html,
                    "<li class=\"mono\">{} &middot; {} use{}</li>",
                    escape(&a.subject),
                    a.count,
                    if a.count == 1 { "" } else { "s" }
                );
            }
            html.push_str("</ul>\n");
            if c.audit_others > 0 {
                let _ = writeln!(
                    html,
                    "<p class=\"meta\">others: {} uses</p>",
                    c.audit_others
                );
            }
        }
        if !c.safe_to_delete.is_empty() {
            html.push_str("<p>Safe to delete (not used inside the window):</p>\n<ul>\n");
            for d in &c.safe_to_delete {
                let why = match d.last_used {
                    Some(day) => format!("last used {day}"),
                    None => "never used since tracking began".into(),
                };
                let _ = writeln!(
                    html,
                    "<li class=\"mono\">Secret {} ({})</li>",
                    escape(&d.secret.to_string()),
                    escape(&why)
                );
            }
            html.push_str("</ul>\n");
            if c.safe_to_delete_omitted > 0 {
                let _ = writeln!(
                    html,
                    "<p class=\"meta\">and {} more</p>",
                    c.safe_to_delete_omitted
                );
            }
        }
    }
    html.push_str("</section>\n");
}

/// Where the evidence came from, when `[history]` is configured: "judged
/// from Prometheus history since …", and what failed if the last query did.
pub fn history_line(status: &Status) -> Option<String> {
    let h = status.history.as_ref()?;
    let mut line = match (h.since, h.only_source) {
        (Some(since), true) => format!("Judged from Prometheus history since {since}."),
        (Some(since), false) => format!(
            "Judged from Prometheus history since {since}{}, then from the auditor's own scrapes.",
            h.until.map(|u| format!(" until {u}")).unwrap_or_default()
        ),
        (None, _) => "No Prometheus history read yet.".to_owned(),
    };
    if let (Some(reason), Some(detail)) = (&h.last_error, &h.last_error_detail) {
        line.push_str(&format!(
            " The last history query failed ({reason}): {detail}"
        ));
    }
    Some(line)
}

/// One sentence in plain words saying why the cutover is in its state.
///
/// `status` supplies context some reasons refer to (which targets are down).
pub fn reason_sentence(c: &CutoverStatus, status: &Status, now: Timestamp) -> String {
    let window = window_name(c.window());
    let ready_in = c
        .ready_in_seconds
        .map(|s| human_duration(Duration::from_secs(s)));
    match c.reason {
        Reason::NoTargets => {
            "No apiserver instance is current (none scraped yet, or every one has left), so nothing is known about the apiservers serving now.".into()
        }
        Reason::MetricAbsent => format!(
            "A token counter this cutover needs is missing on an apiserver (older Kubernetes \
             version or --disabled-metrics); silence there proves nothing{}.",
            down_or_versions(status)
        ),
        Reason::WarmingUp => {
            let observed = observed(c);
            match ready_in {
                Some(r) => format!(
                    "Observing for {observed} of {window}; ready in {r} if nothing is used."
                ),
                None => format!("Observing for {observed} of {window}."),
            }
        }
        Reason::CoverageGap => {
            let missing = human_duration(c.window().saturating_sub(observed_duration(c)));
            let tail = ready_in.map_or(String::new(), |r| {
                format!(" Ready in {r} if nothing is used and the gap ages out of the window.")
            });
            format!(
                "About {missing} of the last {window} went unobserved on an apiserver (restart \
                 or outage), more than the tolerance: uses in that time could have been missed.{tail}"
            )
        }
        Reason::TargetDown => format!(
            "An apiserver has not been scraped successfully for longer than the tolerance{}; \
             uses there would go unseen.",
            down_or_versions(status)
        ),
        Reason::TargetNeverScraped => format!(
            "{} listed as a target but never scraped successfully: its token counters were never \
             seen, so uses there would go unseen.",
            instances_named(c, "An apiserver", "was", "were")
        ),
        Reason::MixedInstances => format!(
            "{} answered as more than one apiserver process (its start time flapped between \
             values already seen): a Service or load-balancer address mixes instances, so its \
             counters cannot be followed. Scrape each instance (discovery) instead.",
            instances_named(c, "An apiserver address", "", "")
        ),
        Reason::QuietCounterIncreased => {
            let last = c
                .last_use
                .map_or_else(|| "at an unknown time".to_owned(), |t| ago(t, now));
            let uses = plural(c.increase, "use");
            match ready_in {
                Some(r) => format!(
                    "{uses} in the last {window}, the last one {last}; ready in {r} if nothing \
                     more is used."
                ),
                None => format!(
                    "{uses} in the last {window}, the last one {last}; it cannot turn ready \
                     until every apiserver is observed again."
                ),
            }
        }
        Reason::NoEvidence => format!(
            "No use in the last {window}, but the evidence counter did not move either: nothing \
             proves that uses would have been counted, so silence proves nothing."
        ),
        Reason::UnattributedUses => format!(
            "No auto-generated legacy token use counted in the last {window}, but {} legacy token \
             uses were not classified as auto, manual or invalidated (--service-account-lookup=false, \
             or tokens rejected before the lookup): they could be auto-generated ones, so silence \
             proves nothing.",
            c.unattributed.unwrap_or(0)
        ),
        Reason::QuietForWindow => {
            let evidence = c.evidence_increase.map_or(String::new(), |n| {
                format!(", while the evidence counter rose by {n}, proving that uses would have been counted")
            });
            if fully_observed(c) {
                format!("No use in a fully observed {window} on every apiserver{evidence}.")
            } else {
                format!(
                    "No use seen in the last {window} on any apiserver{evidence}; the least-observed \
                     one was observed for {} of it, and the unobserved rest is within the coverage \
                     tolerance.",
                    percent(c.coverage_ratio)
                )
            }
        }
    }
}

/// "Apiserver 10.0.0.1:6443 was" / "Apiservers a, b were" from the
/// blocking instances, or the generic subject when none are named.
fn instances_named(c: &CutoverStatus, generic: &str, one: &str, many: &str) -> String {
    let verb = |v: &str| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" {v}")
        }
    };
    match c.blocking_instances.as_slice() {
        [] => format!("{generic}{}", verb(one)),
        [only] => format!("Apiserver {only}{}", verb(one)),
        all => format!("Apiservers {}{}", all.join(", "), verb(many)),
    }
}

/// A duration as people say it, with the two largest units: `4d 21h`,
/// `3h 5m`, `35s`, `250ms` (below a second), `0s`.
pub fn human_duration(d: Duration) -> String {
    let total = d.as_secs();
    if total == 0 {
        let ms = d.subsec_millis();
        return if ms == 0 {
            "0s".into()
        } else {
            format!("{ms}ms")
        };
    }
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    // `total > 0`, so the seconds unit always matches.
    let first = UNITS
        .iter()
        .position(|(size, _)| total >= *size)
        .unwrap_or(UNITS.len() - 1);
    let (size, name) = UNITS[first];
    let mut out = format!("{}{name}", total / size);
    if let Some((next, next_name)) = UNITS.get(first + 1) {
        let n = (total % size) / next;
        if n > 0 {
            let _ = write!(out, " {n}{next_name}");
        }
    }
    out
}

/// A window's length exactly as configured people would write it: `24h`,
/// `36h`, `7d`, `90m`; whole days only from two days on, so `24h` stays
/// `24h`, and never a rounded value.
pub fn window_name(d: Duration) -> String {
    let s = d.as_secs();
    let nanos = d.subsec_nanos();
    if s == 0 || nanos != 0 {
        return human_duration(d);
    }
    if s.is_multiple_of(86_400) && s >= 2 * 86_400 {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3_600) {
        format!("{}h", s / 3_600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// How long a scrape took, never rounded to zero: `0.4ms`, `<0.1ms`,
/// `250ms`, `1.5s`, then [`human_duration`] from a minute on. Truncated, so
/// `9.97 ms` reads `9.9ms`, not `10.0ms`.
pub fn scrape_duration(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 0.1 {
        "<0.1ms".into()
    } else if ms < 10.0 {
        format!("{:.1}ms", (ms * 10.0).floor() / 10.0)
    } else if ms < 1000.0 {
        format!("{}ms", ms.floor())
    } else if seconds < 60.0 {
        format!("{:.1}s", (seconds * 10.0).floor() / 10.0)
    } else {
        human_duration(Duration::from_secs_f64(seconds))
    }
}

/// How long ago `then` was at `now`: `3h ago`, `just now`, or `in 5m` for a
/// time in the future (clock skew between replicas).
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    if then > now {
        return format!(
            "in {}",
            human_duration(now.since(then).max(then.since(now)))
        );
    }
    let d = now.since(then);
    if d < Duration::from_secs(1) {
        "just now".into()
    } else {
        format!("{} ago", human_duration(d))
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>cutover-auditor</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
header, main, footer { max-width: 1100px; margin: 0 auto; padding: 0 1rem; }
header h1 { margin: 1rem 0 0; font-size: 1.4rem; }
.meta, footer { color: #5b6475; font-size: 0.9rem; }
.cutovers { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1rem; margin: 1rem 0; }
.card { background: #fff; border-radius: 8px; padding: 1rem; border-top: 6px solid #8a919e; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.card h2 { margin: 0; font-size: 1.05rem; font-family: ui-monospace, monospace; }
.state { font-size: 2.2rem; font-weight: 700; letter-spacing: .02em; margin: .3rem 0; }
.reason { margin: .3rem 0 .8rem; }
.card dl { display: grid; grid-template-columns: auto 1fr; gap: .2rem .8rem; margin: 0; font-size: .9rem; }
.card dt { color: #5b6475; }
.card dd { margin: 0; }
.s-ready { border-top-color: #1a7f37; } .s-ready .state { color: #1a7f37; }
.s-in_use { border-top-color: #cf222e; } .s-in_use .state { color: #cf222e; }
.s-no_signal { border-top-color: #bf8700; } .s-no_signal .state { color: #9a6700; }
.s-blind { border-top-color: #8a919e; } .s-blind .state { color: #6e7781; }
.regressed { color: #cf222e; font-weight: 600; }
table { width: 100%; border-collapse: collapse; background: #fff; font-size: .9rem; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #e3e6eb; }
th { background: #eef0f3; }
.up { color: #1a7f37; font-weight: 600; } .down { color: #cf222e; font-weight: 600; }
td.mono { font-family: ui-monospace, monospace; }
</style>
</head>
"#;

fn cutover_card(html: &mut String, c: &CutoverStatus, status: &Status, now: Timestamp) {
    let state = state_word(c.state);
    let _ = write!(
        html,
        "<article class=\"card s-{label}\">\n<h2>{name}</h2>\n<div class=\"state\">{state}</div>\n\
         <p class=\"reason\">{reason}</p>\n<dl>\n",
        label = c.state.label(),
        name = escape(c.name.as_str()),
        reason = escape(&reason_sentence(c, status, now)),
    );
    let mut row = |term: &str, value: String| {
        let _ = writeln!(html, "<dt>{term}</dt><dd>{}</dd>", escape(&value));
    };
    row(
        "ready in",
        match (c.state, c.ready_in_seconds) {
            (State::Ready, _) => "now".into(),
            (_, Some(s)) => human_duration(Duration::from_secs(s)),
            (_, None) => "not without a change".into(),
        },
    );
    row(
        "last use",
        c.last_use
            .map_or_else(|| "none seen".into(), |t| ago_and_when(t, now)),
    );
    row(
        "uses in window",
        format!("{} in the last {}", c.increase, window_name(c.window())),
    );
    if let Some(evidence) = c.evidence_increase {
        row("evidence in window", evidence.to_string());
    }
    row(
        "coverage",
        if c.state == State::Ready && !fully_observed(c) {
            format!("{} (within tolerance)", percent(c.coverage_ratio))
        } else {
            percent(c.coverage_ratio)
        },
    );
    row("since", ago_and_when(c.since, now));
    let _ = write!(html, "<dt>regressions</dt><dd");
    if c.regressions > 0 {
        html.push_str(" class=\"regressed\"");
    }
    let _ = write!(
        html,
        ">{}</dd>\n</dl>\n</article>\n",
        if c.regressions == 0 {
            "none".to_owned()
        } else {
            format!("{} (ready, then used again)", c.regressions)
        }
    );
}

fn targets_table(html: &mut String, targets: &[TargetHealth], now: Timestamp) {
    html.push_str("<section>\n<h2>Apiserver instances</h2>\n");
    if targets.is_empty() {
        html.push_str("<p>No apiserver instance discovered yet.</p>\n</section>\n");
        return;
    }
    html.push_str(
        "<table>\n<thead><tr><th>instance</th><th>scrape</th><th>last success</th>\
         <th>duration</th><th>last error</th><th>version</th></tr></thead>\n<tbody>\n",
    );
    for t in targets {
        let (class, word) = if t.up {
            ("up", "up".to_owned())
        } else if t.consecutive_failures > 0 {
            ("down", format!("down ({} failed)", t.consecutive_failures))
        } else {
            ("down", "down".to_owned())
        };
        let error = match (&t.last_error, &t.last_error_detail) {
            (Some(kind), Some(detail)) => format!("{kind}: {detail}"),
            (Some(kind), None) => kind.to_string(),
            (None, _) => "—".into(),
        };
        let _ = writeln!(
            html,
            "<tr><td class=\"mono\">{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&t.instance),
            escape(&word),
            escape(
                &t.last_success
                    .map_or_else(|| "never".into(), |at| ago(at, now))
            ),
            // A failed scrape has no meaningful duration: the error says why.
            escape(
                &t.last_duration_seconds
                    .filter(|s| t.up && s.is_finite() && *s >= 0.0)
                    .map_or_else(|| "—".into(), scrape_duration)
            ),
            escape(&error),
            escape(t.kubernetes_version.as_deref().unwrap_or("unknown")),
        );
    }
    html.push_str("</tbody>\n</table>\n</section>\n");
}

/// `3h ago (2026-06-28 20:26 UTC)`: relative for a glance, absolute to
/// match against logs and graphs.
fn ago_and_when(t: Timestamp, now: Timestamp) -> String {
    let when = std::time::UNIX_EPOCH + Duration::from_millis(t.as_millis().max(0) as u64);
    let rfc3339 = humantime::format_rfc3339_seconds(when).to_string();
    // `2026-06-28T20:26:40Z` → `2026-06-28 20:26 UTC`
    let minute = rfc3339.get(..16).unwrap_or(&rfc3339).replace('T', " ");
    format!("{} ({minute} UTC)", ago(t, now))
}

fn state_word(state: State) -> &'static str {
    match state {
        State::Blind => "blind",
        State::InUse => "in use",
        State::NoSignal => "no signal",
        State::Ready => "ready",
    }
}

/// Coverage as a percentage, never rounded up to 100 % when it is not.
fn percent(ratio: f64) -> String {
    if !ratio.is_finite() {
        return "unknown".into();
    }
    let tenths = (ratio.clamp(0.0, 1.0) * 1000.0).floor() / 10.0;
    format!("{tenths:.1} %")
}

/// True when the whole window was observed on every instance.
fn fully_observed(c: &CutoverStatus) -> bool {
    c.coverage_ratio >= 1.0
}

/// The observed part of the window, from the least-observed instance's share.
fn observed_duration(c: &CutoverStatus) -> Duration {
    let ratio = if c.coverage_ratio.is_finite() {
        c.coverage_ratio.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Whole seconds: the ratio is a float, and 2d 3h must not print as 2d 2h.
    Duration::from_secs((c.window().as_secs_f64() * ratio).round() as u64)
}

fn observed(c: &CutoverStatus) -> String {
    human_duration(observed_duration(c))
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A parenthesis naming the instances that are down, if any.
fn down_or_versions(status: &Status) -> String {
    let down: Vec<&str> = status
        .targets
        .iter()
        .filter(|t| !t.up)
        .map(|t| t.instance.as_str())
        .collect();
    if down.is_empty() {
        String::new()
    } else {
        format!(" (down: {})", down.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(d: Duration, expected: &str) {
        assert_eq!(human_duration(d), expected, "{d:?}");
    }

    #[test]
    fn human_durations() {
        check(Duration::ZERO, "0s");
        check(Duration::from_millis(250), "250ms");
        check(Duration::from_secs(35), "35s");
        check(Duration::from_secs(60), "1m");
        check(Duration::from_secs(3_600 + 5 * 60 + 7), "1h 5m");
        check(Duration::from_secs(3 * 3_600), "3h");
        check(Duration::from_secs(3 * 3_600 + 7), "3h");
        check(Duration::from_secs(4 * 86_400 + 21 * 3_600 + 59), "4d 21h");
        check(Duration::from_secs(7 * 86_400), "7d");
        check(Duration::from_secs(86_400 + 30), "1d");
    }

    const NOW: Timestamp = Timestamp::from_secs(1_780_000_000);
    const DAY: u64 = 86_400;
    const HOUR: u64 = 3_600;

    fn cutover(state: State, reason: Reason) -> CutoverStatus {
        CutoverStatus::for_test(
            "legacy-tokens",
            Duration::from_secs(7 * DAY),
            state,
            reason,
            NOW - Duration::from_secs(2 * HOUR),
        )
    }

    fn target(instance: &str, up: bool) -> TargetHealth {
        TargetHealth {
            instance: instance.into(),
            up,
            last_scrape: Some(NOW),
            last_success: Some(NOW - Duration::from_secs(if up { 0 } else { 600 })),
            last_duration_seconds: Some(0.25),
            kubernetes_version: Some("v1.31.2".into()),
            ..TargetHealth::default()
        }
    }

    fn status(cutovers: Vec<CutoverStatus>, targets: Vec<TargetHealth>) -> Status {
        Status {
            version: "1.0.0".into(),
            evaluated_at: Some(NOW - Duration::from_secs(12)),
            cutovers,
            targets,
            kinds: Vec::new(),
            attribution: None,
            history: None,
        }
    }

    /// Renders `s` and checks that every fragment is on the page, and that
    /// nothing outside the stylesheet looks like an unfilled placeholder.
    fn check_page(s: &Status, fragments: &[&str]) {
        let page = render(s, NOW);
        for fragment in fragments {
            assert!(page.contains(fragment), "missing {fragment:?} in\n{page}");
        }
        let body = &page[page.find("</style>").expect("a stylesheet")..];
        assert!(
            !body.contains('{') && !body.contains('}'),
            "placeholder left in\n{body}"
        );
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        assert!(!page.contains("<script"), "the page needs no JavaScript");
        assert!(
            !page.contains("src=\"http") && !page.contains("href=\"http"),
            "no external assets"
        );
    }

    #[test]
    fn every_reason_has_its_sentence() {
        let warming = CutoverStatus {
            coverage_ratio: (2.0 * DAY as f64 + 3.0 * HOUR as f64) / (7.0 * DAY as f64),
            ready_in_seconds: Some(4 * DAY + 21 * HOUR),
            ..cutover(State::Blind, Reason::WarmingUp)
        };
        let gap = CutoverStatus {
            coverage_ratio: 1.0 - (2.0 * HOUR as f64) / (7.0 * DAY as f64),
            ready_in_seconds: Some(3 * DAY),
            ..cutover(State::Blind, Reason::CoverageGap)
        };
        let in_use = CutoverStatus {
            last_use: Some(NOW - Duration::from_secs(3 * HOUR)),
            increase: 42,
            ready_in_seconds: Some(7 * DAY - 3 * HOUR),
            ..cutover(State::InUse, Reason::QuietCounterIncreased)
        };
        let in_use_down = CutoverStatus {
            last_use: Some(NOW - Duration::from_secs(35)),
            increase: 1,
            ..cutover(State::InUse, Reason::QuietCounterIncreased)
        };
        let no_signal = CutoverStatus {
            name: "token-expiry-extension".into(),
            window_seconds: DAY,
            evidence_increase: Some(0),
            unattributed: None,
            ..cutover(State::NoSignal, Reason::NoEvidence)
        };
        let ready = CutoverStatus {
            name: "token-expiry-extension".into(),
            window_seconds: DAY,
            evidence_increase: Some(1_234),
            unattributed: None,
            ready_in_seconds: Some(0),
            ..cutover(State::Ready, Reason::QuietForWindow)
        };
        let up = vec![target("10.0.0.1:6443", true)];
        let one_down = vec![
            target("10.0.0.1:6443", true),
            target("10.0.0.2:6443", false),
        ];
        let cases: Vec<(CutoverStatus, Vec<TargetHealth>, &[&str])> = vec![
            (
                cutover(State::Blind, Reason::NoTargets),
                vec![],
                &[
                    "No apiserver instance is current",
                    "No apiserver instance discovered yet",
                ],
            ),
            (
                cutover(State::Blind, Reason::MetricAbsent),
                up.clone(),
                &["A token counter this cutover needs is missing on an apiserver"],
            ),
            (
                warming,
                up.clone(),
                &["Observing for 2d 3h of 7d; ready in 4d 21h if nothing is used."],
            ),
            (
                gap,
                up.clone(),
                &[
                    "About 2h of the last 7d went unobserved on an apiserver",
                    "Ready in 3d if nothing is used",
                ],
            ),
            (
                cutover(State::Blind, Reason::TargetDown),
                one_down.clone(),
                &["longer than the tolerance (down: 10.0.0.2:6443)"],
            ),
            (
                CutoverStatus {
                    blocking_instances: vec!["10.0.0.3:6443".into()],
                    ..cutover(State::Blind, Reason::TargetNeverScraped)
                },
                up.clone(),
                &["Apiserver 10.0.0.3:6443 was listed as a target but never scraped successfully"],
            ),
            (
                CutoverStatus {
                    blocking_instances: vec!["kubernetes.default.svc:443".into()],
                    ..cutover(State::Blind, Reason::MixedInstances)
                },
                up.clone(),
                &[
                    "Apiserver kubernetes.default.svc:443 answered as more than one apiserver process",
                ],
            ),
            (
                in_use,
                up.clone(),
                &[
                    "42 uses in the last 7d, the last one 3h ago; ready in 6d 21h if nothing more is used.",
                ],
            ),
            (
                in_use_down,
                one_down,
                &[
                    "1 use in the last 7d, the last one 35s ago; it cannot turn ready until every apiserver is observed again.",
                ],
            ),
            (
                no_signal,
                up.clone(),
                &["No use in the last 24h, but the evidence counter did not move either"],
            ),
            (
                CutoverStatus {
                    name: "legacy-auto-tokens".into(),
                    unattributed: Some(3),
                    ..cutover(State::NoSignal, Reason::UnattributedUses)
                },
                up.clone(),
                &["but 3 legacy token uses were not classified as auto, manual or invalidated"],
            ),
            (
                ready,
                up,
                &[
                    "No use in a fully observed 24h on every apiserver, while the evidence counter rose by 1234, proving that uses would have been counted.",
                ],
            ),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (c, targets, fragments) in cases {
            seen.insert(c.reason);
            check_page(&status(vec![c], targets), fragments);
        }
        assert_eq!(seen.len(), Reason::ALL.len(), "a reason without a case");
    }

    #[test]
    fn cards_show_state_words_and_numbers() {
        let in_use = CutoverStatus {
            last_use: Some(NOW - Duration::from_secs(3 * HOUR)),
            increase: 42,
            coverage_ratio: 0.98765,
            ready_in_seconds: Some(7 * DAY - 3 * HOUR),
            regressions: 2,
            last_regression: None,
            ..cutover(State::InUse, Reason::QuietCounterIncreased)
        };
        let ready = CutoverStatus {
            name: "legacy-auto-tokens".into(),
            ready_in_seconds: Some(0),
            ..cutover(State::Ready, Reason::QuietForWindow)
        };
        let blind = CutoverStatus {
            name: "token-expiry-extension".into(),
            ..cutover(State::Blind, Reason::NoTargets)
        };
        let no_signal = CutoverStatus {
            name: "custom".into(),
            ..cutover(State::NoSignal, Reason::NoEvidence)
        };
        check_page(
            &status(
                vec![in_use, ready, blind, no_signal],
                vec![target("10.0.0.1:6443", true)],
            ),
            &[
                "evaluated 12s ago",
                "version 1.0.0",
                "<article class=\"card s-in_use\">\n<h2>legacy-tokens</h2>\n<div class=\"state\">in use</div>",
                "<article class=\"card s-ready\">\n<h2>legacy-auto-tokens</h2>\n<div class=\"state\">ready</div>",
                "<article class=\"card s-blind\">\n<h2>token-expiry-extension</h2>\n<div class=\"state\">blind</div>",
                "<div class=\"state\">no signal</div>",
                "<dt>ready in</dt><dd>6d 21h</dd>",
                "<dt>ready in</dt><dd>now</dd>",
                "<dt>ready in</dt><dd>not without a change</dd>",
                "<dt>last use</dt><dd>3h ago (2026-05-28 17:26 UTC)</dd>",
                "<dt>last use</dt><dd>none seen</dd>",
                "<dt>uses in window</dt><dd>42 in the last 7d</dd>",
                "<dt>coverage</dt><dd>98.7 %</dd>",
                "<dt>since</dt><dd>2h ago (2026-05-28 18:26 UTC)</dd>",
                "<dd class=\"regressed\">2 (ready, then used again)</dd>",
                "<dt>regressions</dt><dd>none</dd>",
                ".s-ready .state { color: #1a7f37; }",
                ".s-in_use .state { color: #cf222e; }",
            ],
        );
    }

    #[test]
    fn targets_table_and_escaping() {
        let hostile = TargetHealth {
            instance: "<script>alert(1)</script>:6443".into(),
            up: false,
            last_success: None,
            last_duration_seconds: Some(10.0),
            last_error: Some(crate::status::ScrapeErrorKind::Http403),
            last_error_detail: Some("forbidden: user \"system:serviceaccount:x\" & more".into()),
            consecutive_failures: 3,
            kubernetes_version: None,
            ..TargetHealth::default()
        };
        let mut s = status(
            vec![cutover(State::Blind, Reason::TargetDown)],
            vec![target("10.0.0.1:6443", true), hostile],
        );
        s.version = "<b>1</b>".into();
        check_page(
            &s,
            &[
                "<td class=\"mono\">10.0.0.1:6443</td><td class=\"up\">up</td><td>just now</td><td>250ms</td><td>—</td><td>v1.31.2</td>",
                "<td class=\"mono\">&lt;script&gt;alert(1)&lt;/script&gt;:6443</td><td class=\"down\">down (3 failed)</td><td>never</td><td>—</td>",
                "<td>http_403: forbidden: user &quot;system:serviceaccount:x&quot; &amp; more</td><td>unknown</td>",
                "(down: &lt;script&gt;alert(1)&lt;/script&gt;:6443)",
                "version &lt;b&gt;1&lt;/b&gt;",
                "2 apiserver instances",
            ],
        );
        assert!(!render(&s, NOW).contains("<script>"));
    }

    #[test]
    fn scrape_durations_never_read_zero() {
        assert_eq!(scrape_duration(0.0004), "0.4ms");
        assert_eq!(scrape_duration(0.0), "<0.1ms");
        assert_eq!(scrape_duration(0.000_04), "<0.1ms");
        assert_eq!(scrape_duration(0.009_97), "9.9ms");
        assert_eq!(scrape_duration(0.25), "250ms");
        assert_eq!(scrape_duration(0.999_9), "999ms");
        assert_eq!(scrape_duration(1.53), "1.5s");
        assert_eq!(scrape_duration(75.0), "1m 15s");
        let fast = TargetHealth {
            last_duration_seconds: Some(0.0004),
            ..target("10.0.0.1:6443", true)
        };
        // A failed scrape (refused within a millisecond) has no duration to show.
        let failed = TargetHealth {
            last_duration_seconds: Some(0.0003),
            last_error: Some(crate::status::ScrapeErrorKind::Connect),
            consecutive_failures: 1,
            ..target("10.0.0.2:6443", false)
        };
        let s = status(
            vec![cutover(State::Blind, Reason::TargetDown)],
            vec![fast, failed],
        );
        check_page(
            &s,
            &[
                "<td class=\"mono\">10.0.0.1:6443</td><td class=\"up\">up</td><td>just now</td><td>0.4ms</td>",
                "<td class=\"down\">down (1 failed)</td><td>10m ago</td><td>—</td><td>connect</td>",
            ],
        );
        let page = render(&s, NOW);
        assert!(!page.contains("<td>0s</td>"), "{page}");
    }

    #[test]
    fn windows_read_as_configured() {
        let w = |secs: u64| window_name(Duration::from_secs(secs));
        assert_eq!(w(DAY), "24h");
        assert_eq!(w(36 * HOUR), "36h");
        assert_eq!(w(2 * DAY), "2d");
        assert_eq!(w(7 * DAY), "7d");
        assert_eq!(w(14 * DAY), "14d");
        assert_eq!(w(7 * DAY + 12 * HOUR), "180h");
        assert_eq!(w(90 * 60), "90m");
        assert_eq!(w(DAY + 30), "86430s");
        let quiet = CutoverStatus {
            name: "token-expiry-extension".into(),
            window_seconds: DAY,
            ..cutover(State::NoSignal, Reason::NoEvidence)
        };
        let s = status(vec![quiet], vec![target("10.0.0.1:6443", true)]);
        check_page(&s, &["<dt>uses in window</dt><dd>0 in the last 24h</dd>"]);
        let page = render(&s, NOW);
        let body = &page[page.find("</style>").expect("a stylesheet")..];
        assert!(!body.contains("1d"), "{body}");
    }

    #[test]
    fn a_ready_card_says_how_much_was_observed() {
        let ready = |coverage_ratio: f64| CutoverStatus {
            coverage_ratio,
            window_seconds: DAY,
            ready_in_seconds: Some(0),
            evidence_increase: Some(12),
            ..cutover(State::Ready, Reason::QuietForWindow)
        };
        let up = vec![target("10.0.0.1:6443", true)];
        let partly = status(vec![ready(0.9405)], up.clone());
        check_page(
            &partly,
            &[
                "<dt>coverage</dt><dd>94.0 % (within tolerance)</dd>",
                "No use seen in the last 24h on any apiserver, while the evidence counter rose by 12, \
                 proving that uses would have been counted; the least-observed one was observed for \
                 94.0 % of it, and the unobserved rest is within the coverage tolerance.",
            ],
        );
        assert!(!render(&partly, NOW).contains("fully observed"));
        let fully = status(vec![ready(1.0)], up);
        check_page(
            &fully,
            &[
                "<dt>coverage</dt><dd>100.0 %</dd>",
                "No use in a fully observed 24h on every apiserver",
            ],
        );
        assert!(!render(&fully, NOW).contains("within tolerance"));
    }

    #[test]
    fn the_page_says_where_the_evidence_came_from() {
        let since = NOW - Duration::from_secs(8 * 86_400);
        let mut s = status(Vec::new(), Vec::new());
        assert!(!render(&s, NOW).contains("history"));
        s.history = Some(crate::status::HistoryStatus {
            only_source: true,
            since: Some(since),
            until: Some(NOW),
            ..Default::default()
        });
        check_page(
            &s,
            &[&format!("Judged from Prometheus history since {since}.")],
        );
        s.history = Some(crate::status::HistoryStatus {
            only_source: false,
            since: Some(since),
            until: Some(NOW),
            last_error: Some("history_rejected".into()),
            last_error_detail: Some("history_rejected: <html> page".into()),
            ..Default::default()
        });
        check_page(
            &s,
            &[
                &format!(
                    "Judged from Prometheus history since {since} until {NOW}, then from the auditor&#39;s own scrapes."
                ),
                "The last history query failed (history_rejected): history_rejected: &lt;html&gt; page",
            ],
        );
    }

    #[test]
    fn before_the_first_evaluation() {
        let s = Status::default();
        check_page(
            &s,
            &[
                "first evaluation pending",
                "No cutover is enabled in the configuration.",
                "0 apiserver instances",
            ],
        );
    }

    #[test]
    fn ago_and_escape() {
        let now = Timestamp::from_secs(10_000);
        assert_eq!(ago(Timestamp::from_secs(10_000 - 3 * 3_600), now), "3h ago");
        assert_eq!(ago(Timestamp::from_millis(9_999_500), now), "just now");
        assert_eq!(ago(Timestamp::from_secs(10_300), now), "in 5m");
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(percent(0.99999), "99.9 %");
        assert_eq!(percent(1.0), "100.0 %");
    }
}
