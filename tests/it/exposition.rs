//! The streaming extractor against the edge cases of the text format, the
//! cases prometheus-parse 0.2.5 gets wrong, and six real kube-apiserver pages.
//! Every input goes through every feeding strategy (one chunk, chunks of 1,
//! 2, 3 and 7 bytes, gzip) and all must agree.

use std::io::Write;
use std::path::PathBuf;

use cutover_auditor::exposition::{
    ExpositionError, Extractor, MAX_WATCHED_LINE, Page, PageDecoder, Sample, Watch,
    extract_from_reader,
};
use cutover_auditor::families::{self, TokenKind};
use flate2::Compression;
use flate2::write::GzEncoder;

/// What a table row expects: the samples (rendered by `show`), or the
/// exact error message.
enum Want {
    Samples(&'static [&'static str]),
    Error(&'static str),
}
use Want::{Error, Samples};

/// The watch of the table: a short name, a colon name and a real family.
fn table_watch() -> Watch {
    Watch::new(["m", "job:rate:sum", "serviceaccount_legacy_tokens_total"])
}

/// A sample as `name [labels] value timestamp` (labels in Debug form, so
/// commas and quotes inside values stay unambiguous).
fn show(s: &Sample) -> String {
    format!("{} {:?} {} {:?}", s.name, s.labels, s.value, s.timestamp_ms)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

fn feed_plain(watch: &Watch, input: &[u8], chunk: usize) -> Result<Page, ExpositionError> {
    let mut ex = Extractor::new(watch.clone());
    for part in input.chunks(chunk.max(1)) {
        ex.feed(part)?;
    }
    ex.finish()
}

fn feed_decoder(watch: &Watch, input: &[u8], chunk: usize) -> Result<Page, ExpositionError> {
    let mut dec = PageDecoder::new(watch.clone());
    for part in input.chunks(chunk.max(1)) {
        dec.feed(part)?;
    }
    dec.finish()
}

/// Runs `input` through every feeding strategy, checks they agree, and
/// returns the one result.
fn extract_all_ways(watch: &Watch, input: &[u8]) -> Result<Page, String> {
    let whole = feed_plain(watch, input, input.len()).map_err(|e| e.to_string());
    let zipped = gzip(input);
    let mut others = Vec::new();
    for chunk in [1, 2, 3, 7, 4096] {
        others.push((format!("plain/{chunk}"), feed_plain(watch, input, chunk)));
        others.push((
            format!("decoder/{chunk}"),
            feed_decoder(watch, input, chunk),
        ));
        others.push((format!("gzip/{chunk}"), feed_decoder(watch, &zipped, chunk)));
    }
    for (how, got) in others {
        let got = got.map_err(|e| e.to_string());
        assert_eq!(
            format!("{got:?}"),
            format!("{whole:?}"),
            "{how} differs from a single chunk"
        );
    }
    whole
}

#[track_caller]
fn check(input: &str, want: Want) {
    let got = extract_all_ways(&table_watch(), input.as_bytes());
    match (got, want) {
        (Ok(page), Samples(samples)) => {
            let shown: Vec<String> = page.samples.iter().map(show).collect();
            assert_eq!(shown, samples, "input {input:?}");
        }
        (Err(err), Error(message)) => assert_eq!(err, message, "input {input:?}"),
        (Ok(page), Error(message)) => {
            panic!("input {input:?}: expected error {message:?}, got {page:?}")
        }
        (Err(err), Samples(..)) => panic!("input {input:?}: unexpected error {err}"),
    }
}

#[test]
fn prometheus_parse_failures_are_handled() {
    // Each of these is a case prometheus-parse 0.2.5 gets wrong.
    check("m{a=\"x,y\"} 1\n", Samples(&[r#"m [("a", "x,y")] 1 None"#]));
    check("m{a=\"k=v\"} 1\n", Samples(&[r#"m [("a", "k=v")] 1 None"#]));
    check("m{a=\"}\"} 1\n", Samples(&[r#"m [("a", "}")] 1 None"#]));
    check(
        "m{a=\"1\", b=\"2\"} 1\n",
        Samples(&[r#"m [("a", "1"), ("b", "2")] 1 None"#]),
    );
    check(
        "m{a=\"q\\\"b\\\\s\\nn\"} 1\n",
        Samples(&[r#"m [("a", "q\"b\\s\nn")] 1 None"#]),
    );
    check("job:rate:sum 1\n", Samples(&["job:rate:sum [] 1 None"]));
    check(
        "# TYPE m counter\nm 1\ngarbage line here\n",
        Error(
            r#"line 3: m: "garbage line here" is not a sample of this family (value "line" is not a number)"#,
        ),
    );
    check(
        "# HELP m help\n# TYPE m counter\n{broken\n",
        Error(
            r#"line 3: m: "{broken" is not a sample of this family (no metric name at the start of "{broken")"#,
        ),
    );
}

#[test]
fn values_timestamps_and_line_endings() {
    check(
        "m{a=\"1\"} NaN\nm{a=\"2\"} +Inf\nm{a=\"3\"} -Inf\n",
        Samples(&[
            r#"m [("a", "1")] NaN None"#,
            r#"m [("a", "2")] inf None"#,
            r#"m [("a", "3")] -inf None"#,
        ]),
    );
    check(
        "m 1.5e+06 1700000000000\nm{a=\"b\"} -0.25 -5\n",
        Samples(&[
            "m [] 1500000 Some(1700000000000)",
            r#"m [("a", "b")] -0.25 Some(-5)"#,
        ]),
    );
    check(
        "m 1\r\nm{a=\"b\"} 2\r\n",
        Samples(&["m [] 1 None", r#"m [("a", "b")] 2 None"#]),
    );
    check("m 1", Samples(&["m [] 1 None"]));
    check("m{a=\"x\"} 1\r", Samples(&[r#"m [("a", "x")] 1 None"#]));
    check(
        "\n\n  m 1  \n\t\nm{a=\"1\",} 2\n",
        Samples(&["m [] 1 None", r#"m [("a", "1")] 2 None"#]),
    );
    check("m 3 # {trace_id=\"abc\"} 1\n", Samples(&["m [] 3 None"]));
}

#[test]
fn eof_stops_the_page() {
    check(
        "m 1\n# EOF\nm{a=\"x\"} 2\nnot even { a sample\n",
        Samples(&["m [] 1 None"]),
    );
    check("m 1\n# EOF", Samples(&["m [] 1 None"]));
    // A comment that only starts like EOF is an ordinary comment.
    check("# EOFX\nm 1\n", Samples(&["m [] 1 None"]));
}

#[test]
fn malformed_watched_lines_are_errors_with_line_numbers() {
    check(
        "other 1\n\nm abc\n",
        Error(r#"line 3: m: value "abc" is not a number"#),
    );
    check("m\n", Error("line 1: m: missing value"));
    check(
        "m{a=\"1\" 2\n",
        Error(r#"line 1: m: expected ',' or '}' after a label, found "2""#),
    );
    check(
        "m{a=\"1\n",
        Error("line 1: m: value of label a not closed with '\"'"),
    );
    check(
        "m{a=\"\\x\"} 1\n",
        Error("line 1: m: invalid escape \\x in label a"),
    );
    check("m{a 1\n", Error("line 1: m: expected '=' after label a"));
    check(
        "m 1 12.5\n",
        Error(r#"line 1: m: timestamp "12.5" is not an integer"#),
    );
    check(
        "m 1 2 3\n",
        Error(r#"line 1: m: unexpected text "3" after the value"#),
    );
    check(
        "# HELP serviceaccount_legacy_tokens_total [ALPHA] x\n# TYPE serviceaccount_legacy_tokens_total counter\nserviceaccount_legacy_tokens_total 1 2 x\n",
        Error(r#"line 3: serviceaccount_legacy_tokens_total: unexpected text "x" after the value"#),
    );
}

#[test]
fn names_not_help_text_decide() {
    // 1.37 promoted the counters to BETA: HELP text must not matter.
    check(
        "# HELP serviceaccount_legacy_tokens_total [BETA] Cumulative legacy service account tokens used\n\
         # TYPE serviceaccount_legacy_tokens_total counter\n\
         serviceaccount_legacy_tokens_total 7\n",
        Samples(&["serviceaccount_legacy_tokens_total [] 7 None"]),
    );
    // Names that merely start like a watched one, and HELP text naming one.
    check(
        "mm 5\nm_created 3\nm:x 2\n# HELP other mentions m 5\nother{m=\"1\"} 9\n",
        Samples(&[]),
    );
    // Unwatched lines are skipped unparsed, however broken.
    check(
        "foo{ 1\n# TYPE bar\nbar baz qux\nm 2\n",
        Samples(&["m [] 2 None"]),
    );
}

#[test]
fn family_blocks_and_openmetrics_suffixes() {
    // Inside the block, suffixed samples belong to the family but are not it.
    check(
        "# TYPE m counter\nm 1\nm_created 5\n",
        Samples(&["m [] 1 None", "m_created [] 5 None"]),
    );
    // An untyped family right after a watched block ends the block.
    check(
        "# TYPE m counter\nm 1\nother 2\nm{a=\"1\"} 3\n",
        Samples(&["m [] 1 None", r#"m [("a", "1")] 3 None"#]),
    );
    // OpenMetrics counter: the family is the base name, the sample `_total`.
    check(
        "# TYPE serviceaccount_legacy_tokens counter\n\
         # HELP serviceaccount_legacy_tokens Cumulative\n\
         serviceaccount_legacy_tokens_total 3\n\
         serviceaccount_legacy_tokens_created 1.7e9\n\
         # EOF\n",
        Samples(&[
            "serviceaccount_legacy_tokens_total [] 3 None",
            "serviceaccount_legacy_tokens_created [] 1700000000 None",
        ]),
    );
}

#[test]
fn a_series_sampled_twice_is_an_error_naming_both_lines() {
    // Another value: neither is picked.
    check(
        "m 1\nm 2\n",
        Error("line 2: m: series m sampled twice: first on line 1 (value 1), again here (value 2)"),
    );
    // Labels in another order, with other lines, blanks and comments between.
    check(
        "m{a=\"1\",b=\"2\"} 3\nother 1\n\n# HELP m x\nm{b=\"2\", a=\"1\"} 4\n",
        Error(
            r#"line 5: m: series m{b="2",a="1"} sampled twice: first on line 1 (value 3), again here (value 4)"#,
        ),
    );
    // The same value twice is an error too: Prometheus rejects such a page.
    check(
        "job:rate:sum{a=\"x\\\"y\"} 5\njob:rate:sum{a=\"x\\\"y\"} 5\n",
        Error(
            r#"line 2: job:rate:sum: series job:rate:sum{a="x\"y"} sampled twice: first on line 1 (value 5), again here (value 5)"#,
        ),
    );
    // Inside a HELP/TYPE block, after an untyped family, and with `_total`.
    check(
        "# TYPE m counter\nm 1\nother 2\nm 3\n",
        Error("line 4: m: series m sampled twice: first on line 2 (value 1), again here (value 3)"),
    );
    check(
        "# TYPE serviceaccount_legacy_tokens counter\n\
         serviceaccount_legacy_tokens_total 3\n\
         serviceaccount_legacy_tokens_created 1\n\
         serviceaccount_legacy_tokens_total 4\n",
        Error(
            "line 4: serviceaccount_legacy_tokens_total: series serviceaccount_legacy_tokens_total \
             sampled twice: first on line 2 (value 3), again here (value 4)",
        ),
    );
    // A last line without newline is checked too.
    check(
        "m{a=\"1\"} 1\nm{a=\"1\"} 1",
        Error(
            r#"line 2: m: series m{a="1"} sampled twice: first on line 1 (value 1), again here (value 1)"#,
        ),
    );
    // Other label sets or names are other series.
    check(
        "m 1\nm{a=\"1\"} 2\nm{a=\"2\"} 3\nm{a=\"1\",b=\"1\"} 4\nm{b=\"1\"} 5\nm_created 6\n",
        Samples(&[
            "m [] 1 None",
            r#"m [("a", "1")] 2 None"#,
            r#"m [("a", "2")] 3 None"#,
            r#"m [("a", "1"), ("b", "1")] 4 None"#,
            r#"m [("b", "1")] 5 None"#,
        ]),
    );
    check(
        "m{a=\"1\",b=\"2\"} 1\nm{a=\"2\",b=\"1\"} 2\n",
        Samples(&[
            r#"m [("a", "1"), ("b", "2")] 1 None"#,
            r#"m [("a", "2"), ("b", "1")] 2 None"#,
        ]),
    );
}

#[test]
fn a_duplicate_in_a_real_page_names_both_lines() {
    use cutover_auditor::inspect::exit_code;
    let text = std::fs::read_to_string(real_path(REAL[5].file)).expect("fixture reads");
    let line = "serviceaccount_legacy_tokens_total 0\n";
    let at = text.find(line).expect("the legacy counter") + line.len();
    let mut broken = text.clone();
    broken.insert_str(at, "serviceaccount_legacy_tokens_total 7\n");
    let err = extract_from_reader(
        Watch::default_families(),
        gzip(broken.as_bytes()).as_slice(),
    )
    .expect_err("duplicate");
    assert_eq!(
        err.to_string(),
        "line 22434: serviceaccount_legacy_tokens_total: series serviceaccount_legacy_tokens_total \
         sampled twice: first on line 22433 (value 0), again here (value 7)"
    );
    // `inspect` exits 65 (data error) on it, as on any malformed line.
    assert_eq!(exit_code(&err), 65);
    for chunk in [7, 4096] {
        let err = feed_decoder(&Watch::default_families(), broken.as_bytes(), chunk)
            .expect_err("duplicate");
        assert_eq!(err.metric_label(), "malformed");
        assert!(err.to_string().starts_with("line 22434: "), "{err}");
    }
}

#[test]
fn absent_families_are_unknown_not_zero() {
    let page = extract_all_ways(&table_watch(), b"m 0\nother 1\n").expect("valid page");
    assert_eq!(
        page.absent(),
        ["job:rate:sum", "serviceaccount_legacy_tokens_total"]
    );
    assert_eq!(page.family_sum("m"), Some(0.0));
    assert_eq!(page.family_sum("serviceaccount_legacy_tokens_total"), None);
    assert!(page.is_present("m"));
    assert!(!page.is_present("job:rate:sum"));
    assert_eq!(page.process_start_time(), None);
    assert_eq!(page.kubernetes_version(), None);
    let empty = extract_all_ways(&table_watch(), b"").expect("empty page");
    assert_eq!(empty.absent().len(), 3);
    assert_eq!(empty.lines, 0);
}

#[test]
fn family_sum_adds_series() {
    let page = extract_all_ways(&table_watch(), b"m{a=\"1\"} 2\nm{a=\"2\"} 3\n").expect("valid");
    assert_eq!(page.family_sum("m"), Some(5.0));
    assert_eq!(page.series("m").count(), 2);
}

#[test]
fn long_unwatched_lines_are_not_buffered() {
    // A carried line longer than MAX_WATCHED_LINE is an error, so these pass
    // only if the unwatched lines are skipped without being kept.
    let big = "x".repeat(3 * MAX_WATCHED_LINE);
    let inputs = [
        format!("other{{a=\"{big}\"}} 1\nm 1\n"),
        format!("# HELP other {big}\nm 1\n"),
        format!("# HELP m {big}\n# TYPE m counter\nm 1\n"),
        format!("serviceaccount_legacy_tokens_{big} 1\nm 1\n"),
        format!("m{big} 1\nm 1\n"),
    ];
    for input in inputs {
        let page = extract_all_ways(&table_watch(), input.as_bytes()).expect("page");
        let shown: Vec<String> = page.samples.iter().map(show).collect();
        assert_eq!(shown, ["m [] 1 None"], "input starting {:?}", &input[..40]);
    }
    let too_long = format!("m{{a=\"{big}\"}} 1\n");
    let err = feed_plain(&table_watch(), too_long.as_bytes(), 4096).expect_err("too long");
    assert_eq!(
        err.to_string(),
        format!("line 1: m: line longer than {MAX_WATCHED_LINE} bytes")
    );
    assert_eq!(err.metric_label(), "malformed");
}

#[test]
fn gzip_errors_and_limits() {
    // 2000 distinct series (a repeated one would be an error), under caps
    // raised for them.
    let watch = table_watch().with_series_limits(10_000, 10_000);
    let page: Vec<u8> = (0..2000)
        .flat_map(|i| format!("m{{i=\"{i}\"}} 1\n").into_bytes())
        .collect();
    let zipped = gzip(&page);

    let truncated = &zipped[..zipped.len() / 2];
    let err = feed_decoder(&watch, truncated, 64).expect_err("truncated");
    assert!(matches!(err, ExpositionError::Gzip(_)), "{err:?}");
    assert_eq!(err.metric_label(), "decode");

    let mut corrupt = zipped.clone();
    corrupt[20] ^= 0xff;
    corrupt[30] ^= 0xff;
    let err = feed_decoder(&watch, &corrupt, 64).expect_err("corrupt");
    assert_eq!(err.metric_label(), "decode");

    // A small gzip bomb: 8 MB of blank lines in about 8 KB.
    let bomb = gzip(&vec![b'\n'; 8_000_000]);
    let mut dec = PageDecoder::with_limit(watch.clone(), 1_000_000);
    let err = bomb
        .chunks(65536)
        .try_for_each(|c| dec.feed(c))
        .expect_err("limit");
    assert!(matches!(
        err,
        ExpositionError::TooLarge { limit: 1_000_000 }
    ));
    assert_eq!(err.metric_label(), "body_too_large");

    // The limit counts decoded bytes of plain pages too.
    let mut dec = PageDecoder::with_limit(watch.clone(), 10);
    assert!(dec.feed(&page).is_err());
    let mut dec = PageDecoder::with_limit(watch.clone(), page.len() as u64);
    dec.feed(&page).expect("at the limit");
    assert_eq!(dec.finish().expect("page").samples.len(), 2000);

    // Concatenated gzip members are one page.
    let mut two = gzip(b"m 1\n");
    two.extend(gzip(b"job:rate:sum 2\n"));
    let page = feed_decoder(&watch, &two, 3).expect("two members");
    assert_eq!(page.samples.len(), 2);

    // One byte that could start gzip but the body ends there: plain text.
    let page = feed_decoder(&watch, &[0x1f], 1).expect("one byte");
    assert_eq!(page.lines, 1);
}

/// The six real pages and their values from `tests/fixtures/real/SOURCES.md`.
struct Real {
    file: &'static str,
    version: &'static str,
    legacy: f64,
    stale: f64,
    valid: f64,
    /// auto, manual, invalid auto: `None` before 1.29.
    newer: Option<[f64; 3]>,
}

const REAL: [Real; 6] = [
    Real {
        file: "apiserver-1.19.16-newrelic-minikube.txt",
        version: "v1.19.16",
        legacy: 192.0,
        stale: 0.0,
        valid: 0.0,
        newer: None,
    },
    Real {
        file: "apiserver-1.21.14-newrelic-minikube.txt",
        version: "v1.21.14",
        legacy: 0.0,
        stale: 0.0,
        valid: 139.0,
        newer: None,
    },
    Real {
        file: "apiserver-1.24.17-newrelic-minikube.txt",
        version: "v1.24.17",
        legacy: 0.0,
        stale: 0.0,
        valid: 29.0,
        newer: None,
    },
    Real {
        file: "apiserver-1.28.3-newrelic-minikube.txt",
        version: "v1.28.3",
        legacy: 0.0,
        stale: 0.0,
        valid: 35.0,
        newer: None,
    },
    Real {
        file: "apiserver-1.29.5-newrelic-minikube.txt",
        version: "v1.29.5",
        legacy: 0.0,
        stale: 0.0,
        valid: 34.0,
        newer: Some([0.0, 0.0, 0.0]),
    },
    Real {
        file: "apiserver-1.35.0-newrelic-minikube.txt",
        version: "v1.35.0",
        legacy: 0.0,
        stale: 0.0,
        valid: 30.0,
        newer: Some([0.0, 0.0, 0.0]),
    },
];

fn real_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real")
        .join(file)
}

#[test]
fn real_pages_give_the_documented_values() {
    for real in &REAL {
        let path = real_path(real.file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = std::fs::File::open(&path).expect("fixture opens");
        let page = extract_from_reader(Watch::default_families(), file).expect(real.file);

        let sum = |k: TokenKind| page.family_sum(k.family());
        assert_eq!(sum(TokenKind::Legacy), Some(real.legacy), "{}", real.file);
        assert_eq!(sum(TokenKind::Stale), Some(real.stale), "{}", real.file);
        assert_eq!(sum(TokenKind::Valid), Some(real.valid), "{}", real.file);
        let newer = [
            TokenKind::LegacyAuto,
            TokenKind::LegacyManual,
            TokenKind::InvalidLegacyAuto,
        ];
        match real.newer {
            Some(values) => {
                for (kind, value) in newer.into_iter().zip(values) {
                    assert_eq!(sum(kind), Some(value), "{} {kind}", real.file);
                }
                assert!(page.absent().is_empty(), "{}", real.file);
            }
            None => {
                let absent: Vec<&str> = newer.iter().map(|k| k.family()).collect();
                assert_eq!(page.absent(), absent, "{}", real.file);
            }
        }
        assert_eq!(
            page.kubernetes_version(),
            Some(real.version),
            "{}",
            real.file
        );
        let start = page.process_start_time().expect("start time present");
        assert!(start > 1.6e9 && start < 1.8e9, "{}: {start}", real.file);
        assert!(
            page.family_sum(families::RESET_SENTINEL)
                .is_some_and(|v| v > 0.0)
        );
        assert_eq!(
            page.lines as usize,
            bytecount_lines(&bytes),
            "{}",
            real.file
        );

        // Gzip and any chunking give the identical page.
        let zipped = gzip(&bytes);
        for chunk in [1, 7, 4096, 1 << 20] {
            let watch = Watch::default_families();
            let plain = feed_plain(&watch, &bytes, chunk).expect("plain chunks");
            assert_eq!(plain, page, "{} plain/{chunk}", real.file);
            let gz = feed_decoder(&watch, &zipped, chunk).expect("gzip chunks");
            assert_eq!(gz, page, "{} gzip/{chunk}", real.file);
        }
    }
}

fn bytecount_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + usize::from(!bytes.ends_with(b"\n"))
}

#[test]
fn a_malformed_line_in_a_real_page_names_its_line() {
    let path = real_path(REAL[5].file);
    let text = std::fs::read_to_string(&path).expect("fixture reads");
    let broken = text.replacen(
        "serviceaccount_legacy_tokens_total 0\n",
        "serviceaccount_legacy_tokens_total abc\n",
        1,
    );
    assert_ne!(broken, text);
    for chunk in [7, 4096] {
        let err = feed_decoder(&Watch::default_families(), &gzip(broken.as_bytes()), chunk)
            .expect_err("malformed");
        assert_eq!(
            err.to_string(),
            r#"line 22433: serviceaccount_legacy_tokens_total: value "abc" is not a number"#
        );
    }
}

/// A page of `n` label sets of the legacy counter, then a line of another
/// watched family.
fn many_label_sets(n: usize) -> String {
    let mut page = String::from("# TYPE serviceaccount_legacy_tokens_total counter\n");
    for i in 0..n {
        page.push_str(&format!(
            "serviceaccount_legacy_tokens_total{{client=\"c{i}\"}} {i}\n"
        ));
    }
    page.push_str("serviceaccount_stale_tokens_total 0\n");
    page
}

#[test]
fn series_beyond_the_caps_reject_the_page_at_the_first_excess_line() {
    // The default per-family cap: the 65th label set (line 66) is rejected,
    // whatever the chunking or encoding.
    let watch = Watch::default_families();
    let got = extract_all_ways(&watch, many_label_sets(65).as_bytes());
    assert_eq!(
        got.unwrap_err(),
        "line 66: serviceaccount_legacy_tokens_total: more than 64 series in this family \
         (a patched or hostile apiserver?); the page is rejected"
    );
    // 64 are fine.
    let page = extract_all_ways(&watch, many_label_sets(64).as_bytes()).expect("within the cap");
    assert_eq!(
        page.series("serviceaccount_legacy_tokens_total").count(),
        64
    );
    // A cap for all watched families together.
    let tight = Watch::default_families().with_series_limits(100, 10);
    let got = extract_all_ways(&tight, many_label_sets(10).as_bytes());
    assert_eq!(
        got.unwrap_err(),
        "line 12: serviceaccount_stale_tokens_total: more than 10 series of watched families \
         on this page (a patched or hostile apiserver?); the page is rejected"
    );
    let err = feed_plain(&tight, many_label_sets(10).as_bytes(), 4096).unwrap_err();
    assert_eq!(err.metric_label(), "too_many_series");
}

#[test]
fn two_hundred_thousand_label_sets_stop_at_the_cap() {
    // The hostile page of the finding: 200 000 label sets. Feeding stops at
    // the first series over the cap: the extractor never holds more than
    // the cap, however long the page.
    let page = many_label_sets(200_000);
    let mut ex = Extractor::new(Watch::default_families());
    let mut fed = 0;
    let mut error = None;
    for chunk in page.as_bytes().chunks(64 * 1024) {
        fed += chunk.len();
        if let Err(e) = ex.feed(chunk) {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("rejected while feeding");
    assert!(
        matches!(error, ExpositionError::TooManySeries { limit: 64, .. }),
        "{error}"
    );
    assert!(
        fed <= 64 * 1024,
        "stopped in the first chunk, fed {fed} bytes"
    );
}
