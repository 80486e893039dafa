//! The soak benchmark: the decision core at production scale over eight
//! simulated days, and the scrape path against gzip decode alone.
//!
//! `cargo bench --bench soak` runs, in one process:
//!
//! 1. 64 apiserver instances scraped every 30 s for 8 simulated days (manual
//!    time: each cycle's timestamp is computed, nothing sleeps), continuous
//!    valid traffic, a weekly legacy job, restarts and `DELETE /metrics`
//!    resets, through the pure core (`Ledger::list`/`observe`, `prune`,
//!    `verdict::assess` of the three built-in cutovers with 7-day windows,
//!    `Tracker::update`). It reports the peak RSS (`VmHWM`) after the run,
//!    the state file size and its `state::save` time, and the CPU of one
//!    cycle against extracting one 5 MB gzip page with `PageDecoder`.
//! 2. For each size in `BENCH_SIZES` (MB, default `5,30`), a page made by
//!    `benches/gen-apiserver-metrics.py` (cached under `target/bench-pages/`
//!    as `benches/extract.rs` does), gzipped and served over loopback HTTPS
//!    with the simulator's CA, scraped by `scrape::Scraper::scrape`, against
//!    flate2-decoding the same gzip body in memory.
//!
//! Without `--bench` (the test runner builds and runs every target) it does a
//! quick smoke run: two simulated hours and one small HTTPS scrape.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark may do I/O

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_auditor::credentials::TokenFile;
use cutover_auditor::cutover::Cutover;
use cutover_auditor::exposition::{PageDecoder, Watch};
use cutover_auditor::families::{self, TokenKind};
use cutover_auditor::ledger::{Ledger, Observation, Retention, SeriesKey};
use cutover_auditor::scrape::{Scraper, Target};
use cutover_auditor::simulator::tls::{ClusterCa, install_ring_provider};
use cutover_auditor::state::{self, Snapshot};
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{self, CutoverSpec, State, Tracker};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[path = "support/pages.rs"]
mod pages;
use pages::{CHUNK, gzip, gzip_decode, load_page, median, median_of, target_dir};

const ORIGIN: Timestamp = Timestamp::from_secs(1_780_000_000);
const DAY: i64 = 86_400;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // The libtest listing protocol nextest uses: one smoke "test", none ignored.
        if !args.iter().any(|a| a == "--ignored") {
            println!("smoke: test");
        }
        return ExitCode::SUCCESS;
    }
    let result = if args.iter().any(|a| a == "--bench") {
        bench()
    } else {
        smoke()
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("soak bench: {err}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Part 1: the decision core over simulated days.

/// The shape of a soak run.
struct Plan {
    instances: usize,
    interval_secs: i64,
    duration_secs: i64,
    window: Duration,
    /// Every instance restarts this often (staggered), down for two intervals.
    restart_every_secs: i64,
    /// One instance (in turn) has its counters deleted this often.
    reset_every_secs: i64,
    /// The legacy job runs this often, from `legacy_at_secs`.
    legacy_every_secs: i64,
    legacy_at_secs: i64,
    /// `state::save` is timed this often.
    save_every_secs: i64,
}

impl Plan {
    fn production() -> Plan {
        Plan {
            instances: 64,
            interval_secs: 30,
            duration_secs: 8 * DAY,
            window: Duration::from_secs(7 * DAY as u64),
            restart_every_secs: 2 * DAY,
            reset_every_secs: DAY,
            legacy_every_secs: 7 * DAY,
            legacy_at_secs: 2 * 3_600,
            save_every_secs: 3_600,
        }
    }
}

/// One simulated apiserver: its process start and its counters.
struct Instance {
    name: String,
    start: Timestamp,
    /// Down (restarting) until this time: no successful scrape.
    down_until: Timestamp,
    counters: [u64; 7],
}

/// Counter slots: the six token families, then the reset sentinel.
const SENTINEL: usize = 6;

fn family_of(slot: usize) -> &'static str {
    if slot == SENTINEL {
        families::RESET_SENTINEL
    } else {
        TokenKind::ALL[slot].family()
    }
}

fn slot(kind: TokenKind) -> usize {
    TokenKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// splitmix64: reproducible traffic without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct SoakReport {
    cycles: usize,
    observations: u64,
    cycle_median: Duration,
    cycle_p99: Duration,
    cpu_total: Duration,
    wall_total: Duration,
    encode_median: Duration,
    save_median: Duration,
    state_bytes: usize,
    vm_hwm_kib: Option<u64>,
    vm_rss_kib: Option<u64>,
    restarts: u64,
    resets: u64,
    legacy_jobs: u64,
    /// Cycles spent in each state, per cutover, and the final state.
    states: Vec<(Cutover, [usize; 4], State)>,
    valid_total: u64,
    legacy_total: u64,
}

fn soak(plan: &Plan, dir: &Path) -> Result<SoakReport, String> {
    let specs: Vec<CutoverSpec> = vec![
        CutoverSpec::legacy_tokens(plan.window, verdict::DEFAULT_TOLERANCE),
        CutoverSpec::legacy_auto_tokens(plan.window, verdict::DEFAULT_TOLERANCE),
        CutoverSpec::token_expiry_extension(plan.window, verdict::DEFAULT_TOLERANCE),
    ];
    // As the daemon's `retention_for`: the longest window plus an hour.
    let mut ledger = Ledger::new(Retention {
        horizon: plan.window + Duration::from_secs(3_600),
        ..Retention::default()
    });
    let mut trackers: std::collections::BTreeMap<Cutover, Tracker> = Default::default();
    let keys: Vec<SeriesKey> = (0..7).map(|s| SeriesKey::family(family_of(s))).collect();
    let mut rng = Rng(1);
    let mut fleet: Vec<Instance> = (0..plan.instances)
        .map(|i| Instance {
            name: format!("10.0.{}.{}:6443", i / 250, i % 250 + 1),
            start: ORIGIN - Duration::from_secs(3_600 + i as u64 * 60),
            down_until: ORIGIN,
            counters: [0; 7],
        })
        .collect();
    let state_path = dir.join("state.json");
    let (mut restarts, mut resets, mut legacy_jobs, mut observations) = (0u64, 0u64, 0u64, 0u64);
    let mut cycle_times = Vec::new();
    let mut encode_times = Vec::new();
    let mut save_times = Vec::new();
    let mut state_bytes = 0;
    let mut states: Vec<[usize; 4]> = vec![[0; 4]; specs.len()];
    let mut finals = vec![State::Blind; specs.len()];
    let cpu_before = cpu_time();
    let wall = Instant::now();
    let names: Vec<String> = fleet.iter().map(|f| f.name.clone()).collect();
    let n = plan.instances as i64;
    let mut t = 0;
    while t <= plan.duration_secs {
        let now = ORIGIN + Duration::from_secs(t as u64);
        // The world moves: events first, then traffic for this interval.
        for (i, inst) in fleet.iter_mut().enumerate() {
            let offset = plan.restart_every_secs * i as i64 / n;
            if t > 0 && (t - offset).rem_euclid(plan.restart_every_secs) < plan.interval_secs {
                inst.start = now;
                inst.down_until = now + Duration::from_secs(2 * plan.interval_secs as u64);
                inst.counters = [0; 7];
                restarts += 1;
            }
            inst.counters[slot(TokenKind::Valid)] += 20 + rng.below(200);
            inst.counters[SENTINEL] += 40 + rng.below(400);
            if rng.below(2_000) == 0 {
                inst.counters[slot(TokenKind::Stale)] += 1;
            }
        }
        if t > 0 && t % plan.reset_every_secs < plan.interval_secs {
            let i = (t / plan.reset_every_secs) as usize % fleet.len();
            fleet[i].counters = [0; 7];
            resets += 1;
        }
        if (t - plan.legacy_at_secs).rem_euclid(plan.legacy_every_secs) < plan.interval_secs
            && t >= plan.legacy_at_secs
        {
            // The weekly job: a few requests with a manual legacy token,
            // landing on whichever apiserver the Service picks.
            let i = rng.below(fleet.len() as u64) as usize;
            fleet[i].counters[slot(TokenKind::Legacy)] += 3;
            fleet[i].counters[slot(TokenKind::LegacyManual)] += 3;
            legacy_jobs += 1;
        }
        // One scrape cycle of the decision core: list, 64 observations, then
        // the evaluation (prune, 3 assessments, trackers).
        let obs: Vec<Option<Observation>> = fleet
            .iter()
            .map(|inst| {
                (now >= inst.down_until).then(|| Observation {
                    start_time: Some(inst.start),
                    values: keys.iter().cloned().zip(inst.counters).collect(),
                })
            })
            .collect();
        let started = Instant::now();
        for name in &names {
            ledger.list(name, now);
        }
        for (i, o) in obs.into_iter().enumerate() {
            if let Some(o) = o {
                let at = now + Duration::from_millis(i as u64 * 7);
                ledger.observe(&names[i], at, o);
                observations += 1;
            }
        }
        let eval_at = now + Duration::from_secs(1);
        ledger.prune(eval_at);
        for (k, spec) in specs.iter().enumerate() {
            let a = verdict::assess(spec, &ledger, eval_at);
            trackers
                .entry(spec.name.clone())
                .or_default()
                .update(&spec.name, &a, eval_at);
            states[k][State::ALL.iter().position(|s| *s == a.state).unwrap_or(0)] += 1;
            finals[k] = a.state;
        }
        cycle_times.push(started.elapsed());
        if t % plan.save_every_secs == 0 || t + plan.interval_secs > plan.duration_secs {
            let snapshot = Snapshot {
                version: state::FORMAT_VERSION,
                saved_at: eval_at,
                ledger: ledger.clone(),
                trackers: trackers.clone(),
            };
            let start = Instant::now();
            let bytes = state::encode(&snapshot).map_err(|e| e.to_string())?;
            encode_times.push(start.elapsed());
            state_bytes = bytes.len();
            drop(bytes);
            let start = Instant::now();
            state::save(&state_path, &snapshot).map_err(|e| e.to_string())?;
            save_times.push(start.elapsed());
        }
        t += plan.interval_secs;
    }
    let wall_total = wall.elapsed();
    let cpu_total = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    let (vm_hwm_kib, vm_rss_kib) = (proc_status("VmHWM"), proc_status("VmRSS"));
    let on_disk = std::fs::metadata(&state_path)
        .map_err(|e| e.to_string())?
        .len() as usize;
    if on_disk != state_bytes {
        return Err(format!(
            "state file is {on_disk} bytes, the encoding {state_bytes}"
        ));
    }
    let cycles = cycle_times.len();
    let p99 = {
        let mut sorted = cycle_times.clone();
        sorted.sort();
        sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
    };
    Ok(SoakReport {
        cycles,
        observations,
        cycle_median: median_of(cycle_times),
        cycle_p99: p99,
        cpu_total: cpu_total.unwrap_or(wall_total),
        wall_total,
        encode_median: median_of(encode_times),
        save_median: median_of(save_times),
        state_bytes,
        vm_hwm_kib,
        vm_rss_kib,
        restarts,
        resets,
        legacy_jobs,
        states: specs
            .iter()
            .zip(states)
            .zip(finals)
            .map(|((s, c), f)| (s.name.clone(), c, f))
            .collect(),
        valid_total: ledger.family_total(TokenKind::Valid.family()),
        legacy_total: ledger.family_total(TokenKind::Legacy.family()),
    })
}

/// A line of `/proc/self/status` in KiB (`VmHWM`: peak resident set).
fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User plus system CPU time of this process, from `/proc/self/stat` (in
/// clock ticks of 10 ms, the usual `USER_HZ`).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

// ---------------------------------------------------------------------------
// Part 2: the scrape path over loopback HTTPS against gzip decode alone.

/// A loopback HTTPS server that answers every request with `body`, gzip.
struct PageServer {
    addr: SocketAddr,
    dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn serve(ca: &ClusterCa, dir: &Path, body: Bytes) -> Result<PageServer, String> {
    let tls = ca
        .server_config(&["127.0.0.1".parse().map_err(|_| "ip")?])
        .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = stopped.changed() => return,
            };
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                .header("content-encoding", "gzip")
                                .body(Full::new(body))
                                .unwrap_or_default(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(PageServer {
        addr,
        dir: dir.to_path_buf(),
        stop,
    })
}

impl PageServer {
    fn scraper(&self, ca: &ClusterCa) -> Result<Scraper, String> {
        let ca_file = self.dir.join("ca.crt");
        ca.write(&ca_file).map_err(|e| e.to_string())?;
        let token = self.dir.join("token");
        std::fs::write(&token, "soak-bench-token").map_err(|e| e.to_string())?;
        Scraper::new(
            Target {
                instance: self.addr.to_string(),
                addr: self.addr,
                server_name: "kubernetes".to_owned(),
                path: "/metrics".to_owned(),
                ca_file,
                token: Arc::new(TokenFile::new(token)),
            },
            Duration::from_secs(120),
            1 << 30,
        )
        .map_err(|e| e.to_string())
    }
}

struct ScrapeRow {
    size_mb: u32,
    page_bytes: usize,
    gzip_bytes: usize,
    rounds: usize,
    decode: Duration,
    extract: Duration,
    scrape: Duration,
    /// The median over rounds of each round's scrape / decode.
    round_ratio: f64,
}

/// Interleaved rounds: each round times a gzip decode, a `PageDecoder`
/// extraction and a scrape of the same body, in an order that rotates from
/// round to round, so that a burst of load from other processes falls on all
/// three alike. Medians per measure, and the median of the per-round ratios.
async fn measure_scrape(
    ca: &ClusterCa,
    dir: &Path,
    size_mb: u32,
    page_bytes: usize,
    zipped: Vec<u8>,
    rounds: usize,
) -> Result<ScrapeRow, String> {
    let gzip_bytes = zipped.len();
    let zipped = Bytes::from(zipped);
    let server = serve(ca, dir, zipped.clone()).await?;
    let scraper = server.scraper(ca)?;
    let watch = Watch::default_families();
    // Warm-up; also checks the page made it through whole.
    let first = scraper.scrape(&watch).await.map_err(|e| e.to_string())?;
    if !first.gzip || !first.page.is_present(TokenKind::Legacy.family()) {
        return Err(format!("{size_mb} MB: the scraped page lacks the counters"));
    }
    gzip_decode(&zipped)?;
    extract_gzip(&zipped)?;
    let (mut decode, mut extract, mut scrape) = (Vec::new(), Vec::new(), Vec::new());
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut this = [Duration::ZERO; 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            let start = Instant::now();
            match which {
                0 => gzip_decode(&zipped).map(drop)?,
                1 => extract_gzip(&zipped).map(drop)?,
                _ => scraper
                    .scrape(&watch)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())?,
            }
            this[which] = start.elapsed();
        }
        decode.push(this[0]);
        extract.push(this[1]);
        scrape.push(this[2]);
        ratios.push(this[2].as_secs_f64() / this[0].as_secs_f64().max(1e-9));
    }
    let _ = server.stop.send(true);
    ratios.sort_by(f64::total_cmp);
    Ok(ScrapeRow {
        size_mb,
        page_bytes,
        gzip_bytes,
        rounds,
        decode: median_of(decode),
        extract: median_of(extract),
        scrape: median_of(scrape),
        round_ratio: ratios.get(ratios.len() / 2).copied().unwrap_or_default(),
    })
}

fn extract_gzip(zipped: &[u8]) -> Result<cutover_auditor::exposition::Page, String> {
    let mut dec = PageDecoder::new(Watch::default_families());
    for chunk in zipped.chunks(CHUNK) {
        dec.feed(chunk).map_err(|e| e.to_string())?;
    }
    dec.finish().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Driving both parts.

fn bench() -> Result<(), String> {
    let sizes: Vec<u32> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "5,30".to_owned())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("BENCH_SIZES: bad size {s:?}"))
        })
        .collect::<Result<_, _>>()?;
    let dir = scratch_dir()?;
    let pages = target_dir().join("bench-pages");
    std::fs::create_dir_all(&pages).map_err(|e| format!("{}: {e}", pages.display()))?;

    // Part 1 first, so the peak RSS is the core's, not the pages'.
    eprintln!("soak: 64 instances, 30 s interval, 8 simulated days");
    let report = soak(&Plan::production(), &dir)?;
    // The baseline of the same run: one 5 MB page extracted from its gzip.
    let (page5, zipped5) = load_page(&pages, 5)?;
    let extract5 = median(15, || extract_gzip(&zipped5).map(drop))?;
    drop((page5, zipped5));
    print_soak(&report, extract5);

    install_ring_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ca = ClusterCa::generate().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for size in sizes {
        let (page, zipped) = load_page(&pages, size)?;
        let page_bytes = page.len();
        drop(page);
        eprintln!("{size} MB: scraping over loopback HTTPS");
        let rounds = if size >= 50 { 11 } else { 31 };
        rows.push(runtime.block_on(measure_scrape(&ca, &dir, size, page_bytes, zipped, rounds))?);
    }
    print_scrapes(&rows);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn print_soak(r: &SoakReport, extract: Duration) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mib =
        |kib: Option<u64>| kib.map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!("\nDecision core: 64 instances, 30 s interval, 7-day windows, 8 simulated days");
    println!(
        "  cycles {} ({} observations), restarts {}, resets {}, legacy jobs {}",
        r.cycles, r.observations, r.restarts, r.resets, r.legacy_jobs
    );
    println!(
        "  peak RSS (VmHWM)            {:>10} MiB   (goal < 32; VmRSS at end {} MiB)",
        mib(r.vm_hwm_kib),
        mib(r.vm_rss_kib)
    );
    println!(
        "  state file                  {:>10.1} KiB",
        r.state_bytes as f64 / 1024.0
    );
    println!(
        "  state::encode              {:>10.2} ms   median of hourly saves",
        r.encode_median.as_secs_f64() * 1e3
    );
    println!(
        "  state::save (encode+fsync)  {:>10.2} ms   median of hourly saves",
        r.save_median.as_secs_f64() * 1e3
    );
    println!(
        "  cycle (64 observe + prune + 3 assess)  median {:.0} us, p99 {:.0} us",
        us(r.cycle_median),
        us(r.cycle_p99)
    );
    println!(
        "  whole soak: {:.2} s CPU, {:.2} s wall ({:.0} us CPU per cycle incl. the model and saves)",
        r.cpu_total.as_secs_f64(),
        r.wall_total.as_secs_f64(),
        us(r.cpu_total) / r.cycles as f64
    );
    println!(
        "  one 5 MB gzip page extracted (PageDecoder) median {:.0} us; cycle / extraction = {:.3}",
        us(extract),
        r.cycle_median.as_secs_f64() / extract.as_secs_f64()
    );
    for (name, counts, last) in &r.states {
        println!(
            "  {:<24} cycles blind {} in_use {} no_signal {} ready {}; final {}",
            name.to_string(),
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            last.label()
        );
    }
    println!(
        "  stitched totals: valid {}, legacy {}",
        r.valid_total, r.legacy_total
    );
}

fn print_scrapes(rows: &[ScrapeRow]) {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    println!("\nScrape path (Scraper::scrape over loopback HTTPS, gzip) vs gzip decode alone");
    println!(
        "{:>6} {:>9} {:>8} {:>6} | {:>9} {:>9} {:>9} | {:>10} {:>11} {:>10}",
        "size",
        "page MB",
        "gz MB",
        "rounds",
        "gz-dec ms",
        "gz-ext ms",
        "scrape ms",
        "scrape/dec",
        "(per round)",
        "scrape/ext"
    );
    for r in rows {
        println!(
            "{:>6} {:>9.1} {:>8.2} {:>6} | {:>9} {:>9} {:>9} | {:>10.2} {:>11.2} {:>10.2}",
            format!("{}MB", r.size_mb),
            r.page_bytes as f64 / 1e6,
            r.gzip_bytes as f64 / 1e6,
            r.rounds,
            ms(r.decode),
            ms(r.extract),
            ms(r.scrape),
            r.scrape.as_secs_f64() / r.decode.as_secs_f64(),
            r.round_ratio,
            r.scrape.as_secs_f64() / r.extract.as_secs_f64(),
        );
    }
    println!(
        "\ngz-dec: flate2 GzDecoder over the gzip body in memory (64 KiB chunks), output\n\
         discarded; gz-ext: PageDecoder over the same; scrape: Scraper::scrape, TLS 1.3 on\n\
         loopback, body streamed into the extractor. Interleaved rounds (the order\n\
         rotates), medians after one warm-up; scrape/dec is the ratio of the medians,\n\
         (per round) the median of each round's ratio. Goal scrape/dec <= 1.3."
    );
}

// ---------------------------------------------------------------------------
// The smoke run and helpers.

/// A quick run of both parts, so the test runner checks the bench still
/// works (and its figures mean something) without spending time on it.
fn smoke() -> Result<(), String> {
    let dir = scratch_dir()?;
    let plan = Plan {
        instances: 8,
        duration_secs: 2 * 3_600,
        window: Duration::from_secs(3_600),
        restart_every_secs: 1_800,
        reset_every_secs: 2_400,
        legacy_every_secs: 7 * DAY,
        legacy_at_secs: 1_800,
        save_every_secs: 1_200,
        ..Plan::production()
    };
    let r = soak(&plan, &dir)?;
    if r.cycles != 241 || r.legacy_jobs != 1 || r.restarts == 0 || r.resets == 0 {
        return Err(format!(
            "smoke: {} cycles, {} legacy jobs, {} restarts, {} resets",
            r.cycles, r.legacy_jobs, r.restarts, r.resets
        ));
    }
    // The job ran at 0:30 and the window is an hour: in use, then ready.
    let legacy = &r.states[0];
    if legacy.1[1] == 0 || r.legacy_total != 3 || r.valid_total == 0 {
        return Err(format!(
            "smoke: legacy-tokens never in use ({:?}) or totals wrong (legacy {}, valid {})",
            legacy.1, r.legacy_total, r.valid_total
        ));
    }
    if r.state_bytes == 0 || r.vm_hwm_kib.is_none() {
        return Err("smoke: no state written or no VmHWM".into());
    }

    let mut page = String::new();
    for i in 0..20_000 {
        page.push_str(&format!(
            "apiserver_request_duration_seconds_bucket{{resource=\"r{i}\",le=\"+Inf\"}} {i}\n"
        ));
    }
    page.push_str("serviceaccount_legacy_tokens_total 7\n");
    install_ring_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ca = ClusterCa::generate().map_err(|e| e.to_string())?;
    let row = runtime.block_on(measure_scrape(
        &ca,
        &dir,
        1,
        page.len(),
        gzip(page.as_bytes()),
        1,
    ))?;
    if row.scrape.is_zero() || row.decode.is_zero() {
        return Err("smoke: a scrape or decode took no time".into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("soak bench smoke run: ok (run `cargo bench --bench soak` to measure)");
    Ok(())
}

fn scratch_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("cutover-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
