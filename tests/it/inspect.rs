//! `cutover-auditor inspect`, run as a process: output in both formats on the
//! real pages (plain file, gzip on stdin) and the exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cutover-auditor");

const OLD: [&str; 3] = [
    "serviceaccount_legacy_auto_token_uses_total",
    "serviceaccount_legacy_manual_token_uses_total",
    "serviceaccount_invalid_legacy_auto_token_uses_total",
];

/// One real page and the JSON report `inspect` must print for it (values
/// from `tests/fixtures/real/SOURCES.md`).
fn real_pages() -> Vec<(&'static str, Value)> {
    let three = |legacy: u64, stale: u64, valid: u64| {
        json!({
            "serviceaccount_legacy_tokens_total": legacy,
            "serviceaccount_stale_tokens_total": stale,
            "serviceaccount_valid_tokens_total": valid,
        })
    };
    let six = |valid: u64| {
        json!({
            "serviceaccount_legacy_tokens_total": 0,
            "serviceaccount_stale_tokens_total": 0,
            "serviceaccount_valid_tokens_total": valid,
            "serviceaccount_legacy_auto_token_uses_total": 0,
            "serviceaccount_legacy_manual_token_uses_total": 0,
            "serviceaccount_invalid_legacy_auto_token_uses_total": 0,
        })
    };
    let report = |families: Value, absent: &[&str], start: f64, version: &str| {
        json!({
            "families": families,
            "absent": absent,
            "process_start_time_seconds": start,
            "kubernetes_version": version,
        })
    };
    vec![
        (
            "apiserver-1.19.16-newrelic-minikube.txt",
            report(three(192, 0, 0), &OLD, 1.68549934601e9, "v1.19.16"),
        ),
        (
            "apiserver-1.21.14-newrelic-minikube.txt",
            report(three(0, 0, 139), &OLD, 1.68550031196e9, "v1.21.14"),
        ),
        (
            "apiserver-1.24.17-newrelic-minikube.txt",
            report(three(0, 0, 29), &OLD, 1.69401682793e9, "v1.24.17"),
        ),
        (
            "apiserver-1.28.3-newrelic-minikube.txt",
            report(three(0, 0, 35), &OLD, 1.699597117e9, "v1.28.3"),
        ),
        (
            "apiserver-1.29.5-newrelic-minikube.txt",
            report(six(34), &[], 1.71753188251e9, "v1.29.5"),
        ),
        (
            "apiserver-1.35.0-newrelic-minikube.txt",
            report(six(30), &[], 1.78246873027e9, "v1.35.0"),
        ),
    ]
}

fn real_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real")
        .join(file)
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut input = child.stdin.take().expect("stdin piped");
    // The binary may exit before reading everything (usage errors).
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("binary runs")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

/// Runs `args` on `stdin` and checks the exit code and a fragment of stderr
/// (or, for 0, returns stdout).
#[track_caller]
fn check(args: &[&str], stdin: &[u8], code: i32, stderr_has: &str) -> String {
    let out = run(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {stderr}");
    assert!(
        stderr.contains(stderr_has),
        "{args:?}: stderr {stderr:?} lacks {stderr_has:?}"
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[track_caller]
fn check_json(stdout: &str, want: &Value, what: &str) {
    let got: Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"));
    let (Some(got), Some(want)) = (got.as_object(), want.as_object()) else {
        panic!("{what}: not a JSON object: {stdout}");
    };
    let mut keys: Vec<&String> = got.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "absent",
            "families",
            "kubernetes_version",
            "process_start_time_seconds"
        ],
        "{what}"
    );
    for (key, value) in want {
        assert_eq!(&got[key], value, "{what}: key {key}");
    }
}

#[test]
fn json_on_real_pages_plain_file_and_gzip_stdin() {
    for (file, want) in real_pages() {
        let path = real_path(file);
        let path_str = path.to_str().expect("UTF-8 path");
        let stdout = check(&["inspect", "--format", "json", path_str], b"", 0, "");
        check_json(&stdout, &want, file);

        let bytes = std::fs::read(&path).expect("fixture reads");
        let stdout = check(&["inspect", "--format=json", "-"], &gzip(&bytes), 0, "");
        check_json(&stdout, &want, &format!("{file} gzip on stdin"));
    }
}

#[test]
fn text_on_real_pages() {
    let path = real_path("apiserver-1.19.16-newrelic-minikube.txt");
    let stdout = check(&["inspect", path.to_str().expect("UTF-8 path")], b"", 0, "");
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let want: Vec<Vec<&str>> = [
        "serviceaccount_legacy_tokens_total 192",
        "serviceaccount_stale_tokens_total 0",
        "serviceaccount_valid_tokens_total 0",
        "serviceaccount_legacy_auto_token_uses_total absent",
        "serviceaccount_legacy_manual_token_uses_total absent",
        "serviceaccount_invalid_legacy_auto_token_uses_total absent",
        "process_start_time_seconds 1685499346.01",
        "kubernetes_version v1.19.16",
        "",
        "absent (unknown, not zero): serviceaccount_legacy_auto_token_uses_total, \
         serviceaccount_legacy_manual_token_uses_total, serviceaccount_invalid_legacy_auto_token_uses_total",
    ]
    .iter()
    .map(|l| l.split_whitespace().collect())
    .collect();
    assert_eq!(lines, want);

    let bytes =
        std::fs::read(real_path("apiserver-1.35.0-newrelic-minikube.txt")).expect("fixture");
    let stdout = check(&["inspect", "--format", "text"], &gzip(&bytes), 0, "");
    assert!(stdout.contains("kubernetes_version"), "{stdout}");
    assert!(
        !stdout.contains("absent"),
        "1.35 has all six families: {stdout}"
    );
}

#[test]
fn absent_values_are_null_in_json() {
    let stdout = check(&["inspect", "--format", "json"], b"other 1\n", 0, "");
    check_json(
        &stdout,
        &json!({
            "families": {},
            "absent": [
                "serviceaccount_legacy_tokens_total",
                "serviceaccount_stale_tokens_total",
                "serviceaccount_valid_tokens_total",
                "serviceaccount_legacy_auto_token_uses_total",
                "serviceaccount_legacy_manual_token_uses_total",
                "serviceaccount_invalid_legacy_auto_token_uses_total",
            ],
            "process_start_time_seconds": null,
            "kubernetes_version": null,
        }),
        "empty page",
    );
}

#[test]
fn exit_codes() {
    let page = b"# HELP serviceaccount_stale_tokens_total [BETA] x\nserviceaccount_stale_tokens_total 1\nserviceaccount_stale_tokens_total{a=\"1\"} oops\n";
    // 65: a malformed watched line, plain or gzip, with its line number.
    let msg = r#"line 3: serviceaccount_stale_tokens_total: value "oops" is not a number"#;
    check(&["inspect"], page, 65, msg);
    check(&["inspect", "--format", "json"], &gzip(page), 65, msg);

    // 66: input that cannot be read.
    check(
        &["inspect", "/nonexistent/page.txt"],
        b"",
        66,
        "cannot open /nonexistent/page.txt",
    );
    let zipped =
        gzip(&std::fs::read(real_path("apiserver-1.29.5-newrelic-minikube.txt")).expect("fixture"));
    check(
        &["inspect"],
        &zipped[..zipped.len() - 100],
        66,
        "invalid or truncated gzip",
    );
    check(&["inspect"], &[0x1f, 0x8b, 0, 0, 0], 66, "gzip");

    // 64: a bad command line, with the usage.
    check(&[], b"", 64, "Usage:");
    check(&["frobnicate"], b"", 64, "unknown command");
    check(
        &["inspect", "--format", "yaml"],
        b"",
        64,
        "unknown format \"yaml\"",
    );
    check(&["inspect", "--bogus"], b"", 64, "Usage:");
    check(&["inspect", "a", "b"], b"", 64, "Usage:");

    // 0: help and version.
    let help = check(&["--help"], b"", 0, "");
    assert!(help.contains("inspect [--format text|json] [FILE|-]"));
    let version = check(&["--version"], b"", 0, "");
    assert_eq!(
        version.trim(),
        format!("cutover-auditor {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn input_without_any_exposition_line_exits_65() {
    let msg = "no Prometheus text exposition found";
    // Empty, blank, HTML, JSON, prose and a gzip of nothing: not a page, so
    // not "six absent families".
    let html = b"<!DOCTYPE html>\n<html><body>Bad Gateway</body></html>\n";
    for (what, input) in [
        ("empty", &b""[..]),
        ("blank lines", b"\n  \n\t\n"),
        ("html", html),
        ("json", b"{\"kind\":\"Status\",\"code\":403}\n"),
        ("prose", b"hello world\nForbidden\n# just a comment\n"),
    ] {
        let stderr = String::from_utf8_lossy(&run(&["inspect"], input).stderr).into_owned();
        check(&["inspect"], input, 65, msg);
        assert!(
            stderr.contains("stdin"),
            "{what}: names the input: {stderr}"
        );
        check(&["inspect", "--format", "json"], &gzip(input), 65, msg);
    }
    // A file is named.
    let dir = std::env::temp_dir().join(format!("cutover-inspect-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, b"").expect("write");
    let path = empty.to_str().expect("UTF-8 path");
    check(
        &["inspect", path],
        b"",
        65,
        &format!("reading {path}: {msg}"),
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A page with exposition lines but none of the watched families is a
    // page: exit 0 with the six families absent (an older or filtered apiserver).
    for page in [
        &b"other 1\n"[..],
        b"# HELP go_goroutines Number of goroutines.\n",
        b"# TYPE x counter\n",
        b"{\"quoted.name\"} 1\n",
        b"go_info{version=\"go1.22\"} 1\n",
    ] {
        let stdout = check(&["inspect"], page, 0, "");
        assert!(stdout.contains("absent (unknown, not zero)"), "{stdout}");
    }
    // A long unwatched line, split across read chunks, still counts.
    let mut long = b"apiserver_request_total{".to_vec();
    long.extend(std::iter::repeat_n(b'a', 300_000));
    long.extend(b"=\"x\"} 5\n");
    check(&["inspect"], &long, 0, "");
}

#[test]
fn a_page_with_too_many_label_sets_exits_65_naming_the_cap() {
    // A patched or hostile apiserver: 200 000 label sets of one counter.
    let mut page = String::new();
    for i in 0..200_000 {
        page.push_str(&format!(
            "serviceaccount_legacy_tokens_total{{client=\"c{i}\"}} 1\n"
        ));
    }
    check(
        &["inspect"],
        page.as_bytes(),
        65,
        "line 65: serviceaccount_legacy_tokens_total: more than 64 series in this family",
    );
}
