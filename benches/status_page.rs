//! Status page size and render time with timelines: 64 apiserver instances
//! observed for 7 days, the three built-in cutovers at their production
//! windows (7 days, 7 days, 24 hours).
//!
//! `cargo bench --bench status_page` builds two ledgers (scrapes every 5
//! minutes): `typical` (a legacy client on 8 instances every 6 hours, valid
//! tokens used everywhere, three restarts, one instance gone, one never
//! scraped) and `worst` (every counter rising on every instance at every
//! scrape), then prints the medians of building the timelines and rendering
//! the page, and the page and JSON sizes. It fails when the page takes 50 ms
//! or more or weighs 300 KB or more. Without `--bench` (the test runner builds
//! and runs every target) it does the same on 4 instances for a day.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark may do I/O

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use cutover_auditor::families::TokenKind;
use cutover_auditor::ledger::{Ledger, Observation, Retention, SeriesKey};
use cutover_auditor::status::{CutoverStatus, Status};
use cutover_auditor::status_page;
use cutover_auditor::time::Timestamp;
use cutover_auditor::timeline;
use cutover_auditor::verdict::{self, CutoverSpec, Tracker};

#[path = "support/pages.rs"]
#[allow(dead_code)] // the page helpers serve the other benchmarks
mod pages;
use pages::median;

/// The budgets of issue 15.
const MAX_RENDER: Duration = Duration::from_millis(50);
const MAX_BYTES: usize = 300 * 1024;

const ORIGIN: i64 = 1_800_000_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("smoke: test");
        }
        return ExitCode::SUCCESS;
    }
    let full = args.iter().any(|a| a == "--bench");
    let (instances, days, runs) = if full { (64, 7, 21) } else { (4, 1, 3) };
    let mut failed = false;
    for worst in [false, true] {
        match run(instances, days, worst, runs) {
            Ok(ok) => failed |= !ok,
            Err(err) => {
                eprintln!("status_page bench: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A ledger of `instances` scraped every 5 minutes for `days` days.
fn ledger(instances: usize, days: i64, worst: bool) -> (Ledger, Timestamp, Vec<String>) {
    let mut ledger = Ledger::new(Retention {
        horizon: Duration::from_secs((days as u64 + 1) * 86_400),
        ..Retention::default()
    });
    let names: Vec<String> = (0..instances)
        .map(|i| format!("10.{}.{}.1:6443", i / 250, i % 250))
        .collect();
    let t = |s: i64| Timestamp::from_secs(ORIGIN + s);
    let end = days * 86_400;
    let step = 300;
    let mut counts: Vec<BTreeMap<TokenKind, u64>> = vec![BTreeMap::new(); instances];
    let mut starts: Vec<i64> = vec![-3_600; instances];
    for name in &names {
        ledger.list(name, t(0));
    }
    let never = if worst { None } else { names.last().cloned() };
    let gone = if worst { None } else { names.first().cloned() };
    for s in (0..=end).step_by(step as usize) {
        for (i, name) in names.iter().enumerate() {
            if Some(name) == never.as_ref() {
                continue;
            }
            if Some(name) == gone.as_ref() && s > end / 2 {
                if s == end / 2 + step {
                    ledger.remove(name, t(s));
                }
                continue;
            }
            // Three restarts in the typical world.
            if !worst && i % 20 == 1 && s == (i as i64 * 7_919) % end / step * step {
                starts[i] = s - 30;
                counts[i].clear();
            }
            for kind in TokenKind::ALL {
                let n = counts[i].entry(kind).or_default();
                let rises = if worst {
                    true
                } else {
                    match kind {
                        TokenKind::Valid => true,
                        TokenKind::Legacy | TokenKind::LegacyManual => {
                            i % 8 == 0 && s % 21_600 == 0
                        }
                        _ => false,
                    }
                };
                if rises {
                    *n += 1 + (s as u64 / step as u64 + i as u64) % 7;
                }
            }
            let obs = Observation {
                start_time: Some(t(starts[i])),
                values: counts[i]
                    .iter()
                    .map(|(k, v)| (SeriesKey::family(k.family()), *v))
                    .collect(),
            };
            ledger.observe(name, t(s), obs);
        }
    }
    (ledger, t(end), names)
}

fn run(instances: usize, days: i64, worst: bool, runs: usize) -> Result<bool, String> {
    let (ledger, now, _) = ledger(instances, days, worst);
    let tolerance = Duration::from_secs(300);
    let specs: Vec<CutoverSpec> = if days >= 7 {
        CutoverSpec::builtin()
    } else {
        vec![
            CutoverSpec::legacy_tokens(Duration::from_secs(86_400), tolerance),
            CutoverSpec::legacy_auto_tokens(Duration::from_secs(86_400), tolerance),
            CutoverSpec::token_expiry_extension(Duration::from_secs(86_400), tolerance),
        ]
    };
    let status = |with_timelines: bool| -> Status {
        let cutovers = specs
            .iter()
            .map(|spec| {
                let a = verdict::assess(spec, &ledger, now);
                let ready_in = a.ready_in;
                let v = Tracker::default().verdict(&spec.name, a, now);
                let c = CutoverStatus::new(spec, &v);
                if with_timelines {
                    c.with_timeline(timeline::build(spec, &ledger, now, ready_in))
                } else {
                    c
                }
            })
            .collect();
        Status {
            version: "bench".into(),
            evaluated_at: Some(now),
            cutovers,
            ..Status::default()
        }
    };
    let built = median(runs, || {
        std::hint::black_box(status(true));
        Ok(())
    })?;
    let without = median(runs, || {
        std::hint::black_box(status(false));
        Ok(())
    })?;
    let full = status(true);
    let mut page = String::new();
    let render = median(runs, || {
        page = status_page::render(&full, now);
        Ok(())
    })?;
    let json = serde_json::to_string(&full).map_err(|e| format!("status JSON: {e}"))?;
    let lanes: Vec<usize> = full
        .cutovers
        .iter()
        .filter_map(|c| c.timeline.as_ref().map(|t| t.lanes.len()))
        .collect();
    let world = if worst { "worst" } else { "typical" };
    println!(
        "{world:>7}: {instances} instances x {days} d, lanes {lanes:?}: timelines built in {:.2} ms \
         (status without them {:.2} ms), page rendered in {:.2} ms, page {} KiB, JSON {} KiB",
        built.saturating_sub(without).as_secs_f64() * 1e3,
        without.as_secs_f64() * 1e3,
        render.as_secs_f64() * 1e3,
        page.len() / 1024,
        json.len() / 1024,
    );
    if lanes.contains(&0) || page.matches("<svg ").count() != specs.len() {
        return Err(format!(
            "{world}: a timeline without lanes or an SVG missing"
        ));
    }
    let ok = render < MAX_RENDER && page.len() < MAX_BYTES;
    if !ok {
        eprintln!(
            "{world}: over budget (render < {} ms, page < {} KiB)",
            MAX_RENDER.as_millis(),
            MAX_BYTES / 1024
        );
    }
    Ok(ok)
}
