//! Extraction speed and memory against gzip decode alone and prometheus-parse.
//!
//! `cargo bench --bench extract` generates pages with
//! `benches/gen-apiserver-metrics.py --size-mb N --seed 1` for N in
//! `BENCH_SIZES` (default `5,30,100`), caches them (and their gzip) under
//! `target/bench-pages/`, and prints medians, the two target ratios and the
//! peak heap of extraction. Without `--bench` (the test runner builds and runs
//! every target) it does a quick smoke run on a small in-process page.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark may do I/O

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cutover_auditor::exposition::{Extractor, Page, PageDecoder, Watch};
use cutover_auditor::families::TokenKind;
use flate2::write::GzDecoder;

#[path = "support/pages.rs"]
mod pages;
use pages::{CHUNK, gzip, gzip_decode, load_page, median, target_dir};

/// Counts live and peak heap bytes, to show extraction memory does not grow
/// with the page.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let now = if new_size >= layout.size() {
                LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size()
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed)
                    - (layout.size() - new_size)
            };
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

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
            eprintln!("extract bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A quick run of every measured operation on a small page, so the test
/// runner checks the bench still works without spending time on it.
fn smoke() -> Result<(), String> {
    let mut page = String::new();
    for i in 0..2000 {
        page.push_str(&format!(
            "apiserver_request_duration_seconds_bucket{{resource=\"r{i}\",le=\"+Inf\"}} {i}\n"
        ));
    }
    page.push_str("# HELP serviceaccount_legacy_tokens_total [BETA] x\n");
    page.push_str("# TYPE serviceaccount_legacy_tokens_total counter\n");
    page.push_str("serviceaccount_legacy_tokens_total 7\n");
    let zipped = gzip(page.as_bytes());
    let plain = extract_plain(page.as_bytes())?;
    let gz = extract_gzip(&zipped)?;
    if plain != gz || plain.family_sum(TokenKind::Legacy.family()) != Some(7.0) {
        return Err("smoke: plain and gzip extraction disagree or miss the counter".into());
    }
    if line_scan(page.as_bytes()) != 2003 || gzip_decode(&zipped)? != page.len() {
        return Err("smoke: line scan or gzip decode is wrong".into());
    }
    if prometheus_parse(&page)? != 2001 {
        return Err("smoke: prometheus-parse sample count".into());
    }
    println!("extract bench smoke run: ok (run `cargo bench --bench extract` to measure)");
    Ok(())
}

fn bench() -> Result<(), String> {
    let sizes: Vec<u32> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "5,30,100".to_owned())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("BENCH_SIZES: bad size {s:?}"))
        })
        .collect::<Result<_, _>>()?;
    let dir = target_dir().join("bench-pages");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rows = Vec::new();
    for size in sizes {
        let (page, zipped) = load_page(&dir, size)?;
        rows.push(measure(size, &page, &zipped)?);
    }
    print_table(&rows);
    Ok(())
}

struct Row {
    size_mb: u32,
    page_bytes: usize,
    gzip_bytes: usize,
    scan: Duration,
    plain: Duration,
    decode: Duration,
    decode_scan: Duration,
    gzip: Duration,
    prom: Duration,
    peak_plain: usize,
    peak_gzip: usize,
}

fn measure(size_mb: u32, page: &[u8], zipped: &[u8]) -> Result<Row, String> {
    let text = std::str::from_utf8(page).map_err(|e| format!("page not UTF-8: {e}"))?;
    eprintln!("{size_mb} MB: measuring");
    let reference = extract_plain(page)?;
    if !reference.is_present(TokenKind::Legacy.family()) || extract_gzip(zipped)? != reference {
        return Err(format!("{size_mb} MB: extraction result is wrong"));
    }
    let fast = 15;
    let scan = median(fast, || {
        line_scan(page);
        Ok(())
    })?;
    let plain = median(fast, || extract_plain(page).map(drop))?;
    let decode = median(fast, || gzip_decode(zipped).map(drop))?;
    let decode_scan = median(fast, || gzip_decode_scan(zipped).map(drop))?;
    let gzip_time = median(fast, || extract_gzip(zipped).map(drop))?;
    let prom = median(3, || prometheus_parse(text).map(drop))?;
    let peak_plain = peak_of(|| extract_plain(page).map(drop))?;
    let peak_gzip = peak_of(|| extract_gzip(zipped).map(drop))?;
    Ok(Row {
        size_mb,
        page_bytes: page.len(),
        gzip_bytes: zipped.len(),
        scan,
        plain,
        decode,
        decode_scan,
        gzip: gzip_time,
        prom,
        peak_plain,
        peak_gzip,
    })
}

fn print_table(rows: &[Row]) {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    println!(
        "\n{:>6} {:>9} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} | {:>8} {:>8} | {:>9} {:>9}",
        "size",
        "page MB",
        "gz MB",
        "scan",
        "extract",
        "gz-dec",
        "dec+scan",
        "gz-extr",
        "prom-parse",
        "gz/dec",
        "prom/ext",
        "peak KiB",
        "peak gz"
    );
    println!(
        "{:>6} {:>9} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} | {:>8} {:>8} | {:>9} {:>9}",
        "", "", "", "ms", "ms", "ms", "ms", "ms", "ms", "<=1.3", ">=40", "plain", "gzip"
    );
    for r in rows {
        println!(
            "{:>6} {:>9.1} {:>8.2} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} | {:>8.2} {:>8.0} | {:>9} {:>9}",
            format!("{}MB", r.size_mb),
            r.page_bytes as f64 / 1e6,
            r.gzip_bytes as f64 / 1e6,
            ms(r.scan),
            ms(r.plain),
            ms(r.decode),
            ms(r.decode_scan),
            ms(r.gzip),
            ms(r.prom),
            r.gzip.as_secs_f64() / r.decode.as_secs_f64(),
            r.prom.as_secs_f64() / r.plain.as_secs_f64(),
            r.peak_plain / 1024,
            r.peak_gzip / 1024,
        );
    }
    println!(
        "\nscan: memchr line scan of the page in memory; extract: Extractor fed 64 KiB chunks;\n\
         gz-dec: flate2 GzDecoder fed 64 KiB compressed chunks, output discarded; dec+scan: the\n\
         same plus a memchr line scan; gz-extr: PageDecoder fed 64 KiB compressed chunks;\n\
         prom-parse: prometheus-parse 0.2.5 Scrape::parse over every line. Medians (15 runs,\n\
         3 for prom-parse) after one warm-up. peak: heap high-water mark during one extraction,\n\
         above what was live before it (the page itself excluded)."
    );
}

/// Heap high-water mark of `f` above the bytes live before it.
fn peak_of(f: impl FnOnce() -> Result<(), String>) -> Result<usize, String> {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f()?;
    Ok(PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

fn line_scan(page: &[u8]) -> usize {
    let lines = memchr::memchr_iter(b'\n', page).count();
    lines + usize::from(!page.is_empty() && !page.ends_with(b"\n"))
}

fn extract_plain(page: &[u8]) -> Result<Page, String> {
    let mut ex = Extractor::new(Watch::default_families());
    for chunk in page.chunks(CHUNK) {
        ex.feed(chunk).map_err(|e| e.to_string())?;
    }
    ex.finish().map_err(|e| e.to_string())
}

fn extract_gzip(zipped: &[u8]) -> Result<Page, String> {
    let mut dec = PageDecoder::new(Watch::default_families());
    for chunk in zipped.chunks(CHUNK) {
        dec.feed(chunk).map_err(|e| e.to_string())?;
    }
    dec.finish().map_err(|e| e.to_string())
}

/// Counts newlines of what is written, discarding the bytes.
struct Scan(usize);

impl Write for Scan {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += memchr::memchr_iter(b'\n', buf).count();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn gzip_decode_scan(zipped: &[u8]) -> Result<usize, String> {
    let mut dec = GzDecoder::new(Scan(0));
    for chunk in zipped.chunks(CHUNK) {
        dec.write_all(chunk).map_err(|e| e.to_string())?;
    }
    Ok(dec.finish().map_err(|e| e.to_string())?.0)
}

fn prometheus_parse(text: &str) -> Result<usize, String> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
    Ok(scrape.samples.len())
}
