//! The alert rules shipped in `deploy/`, checked with the real tools.
//!
//! - `promtool check rules` accepts the plain rules file, and `promtool test
//!   rules` passes the unit tests in `deploy/rules/tests/`.
//! - Those unit tests cover every alert both firing (with its exact labels and
//!   annotations) and staying silent, and they fail when a rule is mutated.
//! - The PrometheusRule is exactly what the generator makes of the plain file.
//! - Every alert has the promised severity, summary, description and a
//!   `runbook_url` pointing at an existing runbook; every runbook belongs to
//!   an alert and has the same sections.
//!
//! A missing `promtool` or `yamllint` fails these tests instead of skipping
//! them: `tests/run-all.sh` installs both.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The single source of the rules.
const RULES: &str = "deploy/rules/cutover-auditor.rules.yaml";
/// The same rules as a prometheus-operator resource, generated.
const PROMETHEUS_RULE: &str = "deploy/base/prometheusrule.yaml";
const GENERATOR: &str = "deploy/rules/gen-prometheusrule.sh";
const UNIT_TESTS: &str = "deploy/rules/tests";
const YAMLLINT_CONFIG: &str = "deploy/.yamllint.yaml";
const RUNBOOKS: &str = "docs/runbooks";
const RUNBOOK_URL_PREFIX: &str =
    "https://github.com/cutover-auditor/cutover-auditor/blob/main/docs/runbooks/";

/// Every alert the project promises, with its severity. Removing or renaming
/// one is a breaking change for users' routes and silences.
const ALERTS: &[(&str, &str)] = &[
    ("LegacyServiceAccountTokensInUse", "warning"),
    ("StaleServiceAccountTokensInUse", "warning"),
    ("InvalidatedLegacyTokensPresented", "critical"),
    // Not `info`: kube-prometheus-stack's InfoInhibitor would swallow it.
    ("ServiceAccountTokenCutoverReady", "warning"),
    ("ServiceAccountTokenCutoverRegressed", "critical"),
    ("CutoverAuditorScrapeFailing", "warning"),
    ("CutoverAuditorBlind", "warning"),
    // Down harms no client: it only delays the evidence.
    ("CutoverAuditorDown", "warning"),
    ("CutoverAuditorEvaluationStale", "warning"),
    ("CutoverAuditorDiscoveryFailing", "warning"),
    ("CutoverAuditorStateWriteFailing", "warning"),
];

/// Sections every runbook has, in this order, so an on-call engineer finds
/// the same thing in the same place whatever the alert.
const RUNBOOK_SECTIONS: &[&str] = &[
    "## Meaning",
    "## Impact",
    "## Find the cause",
    "## Fix",
    "## Silence responsibly",
];

#[test]
fn promtool_accepts_the_rules() {
    let out = tool("promtool", &["check", "rules", RULES]);
    assert_success("promtool check rules", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "promtool found a different number of rules than the {} alerts:\n{stdout}",
        ALERTS.len()
    );
}

#[test]
fn promtool_unit_tests_pass() {
    let files = unit_test_files(&root().join(UNIT_TESTS));
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = tool("promtool", &args);
    assert_success("promtool test rules", &out);
}

#[test]
fn unit_tests_cover_every_alert_firing_and_silent() {
    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    for file in unit_test_files(&root().join(UNIT_TESTS)) {
        let unit: UnitTestFile = parse_yaml(&file);
        assert_eq!(
            unit.rule_files,
            ["../cutover-auditor.rules.yaml"],
            "{file} must test the plain rules file"
        );
        for case in unit.tests.iter().flat_map(|group| &group.alert_rule_test) {
            if case.exp_alerts.is_empty() {
                silent.insert(case.alertname.clone());
                continue;
            }
            firing.insert(case.alertname.clone());
            for alert in &case.exp_alerts {
                check_expected_alert(&file, &case.alertname, alert);
            }
        }
    }
    let names: BTreeSet<String> = ALERTS.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(firing, names, "alerts with a unit test where they fire");
    assert_eq!(
        silent, names,
        "alerts with a unit test where they stay silent"
    );
}

#[test]
fn unit_tests_fail_when_a_rule_changes() {
    // Each mutation changes what an alert says or when it fires; if the unit
    // tests still pass, they do not check what they claim to.
    let mutations = [
        (
            "          severity: warning\n        annotations:\n          summary: Cutover {{ $labels.cutover }} is ready",
            "          severity: info\n        annotations:\n          summary: Cutover {{ $labels.cutover }} is ready",
        ),
        (
            "severity: warning\n        annotations:\n          summary: cutover-auditor is down",
            "severity: critical\n        annotations:\n          summary: cutover-auditor is down",
        ),
        (
            "cutover_last_evaluation_timestamp_seconds) > 300",
            "cutover_last_evaluation_timestamp_seconds) > 240",
        ),
        (
            "cutover_discovery_last_success_timestamp_seconds > 600",
            "cutover_discovery_last_success_timestamp_seconds > 0",
        ),
        (
            "increase(cutover_state_write_errors_total[15m]) > 0",
            "increase(cutover_state_write_errors_total[15m]) >= 0",
        ),
        (
            "cutover_scrape_errors_total{apiserver=%q,job=%q,instance=%q}",
            "cutover_scrape_errors_total{instance=%q,job=%q,apiserver=%q}",
        ),
        ("for: 10m", "for: 20m"),
        ("> cutover_window_seconds)", ">= cutover_window_seconds)"),
        (
            "increase(cutover_regressions_total[1h])",
            "increase(cutover_regressions_total[2h])",
        ),
        (
            r#"kind="invalid_legacy_auto", window="5m""#,
            r#"kind="invalid_legacy_auto", window="1h""#,
        ),
        ("| humanizePercentage", "| humanize"),
        (
            "cutover_reason{cutover=%q,job=%q,instance=%q} == 1",
            "cutover_reason{cutover=%q,job=%q,instance=%q} == 0",
        ),
    ];
    // promtool takes most of a second per run; run the mutations side by side.
    std::thread::scope(|scope| {
        for (from, to) in mutations {
            scope.spawn(move || check_mutation_is_caught(from, to));
        }
    });
}

#[test]
fn prometheusrule_is_what_the_generator_makes() {
    let out = tool("bash", &[GENERATOR, "-"]);
    assert_success(GENERATOR, &out);
    let committed = read(&root().join(PROMETHEUS_RULE));
    assert!(
        out.stdout == committed.as_bytes(),
        "{PROMETHEUS_RULE} differs from what {GENERATOR} makes of {RULES}; \
         regenerate it with `bash {GENERATOR}` and commit the result"
    );

    // The generator works on text, so check that the text means the same.
    let plain: Value = parse_yaml(RULES);
    let resource: Value = parse_yaml(PROMETHEUS_RULE);
    let expected_metadata: Value = serde_yaml_ng::from_str(
        "name: cutover-auditor\n\
         namespace: cutover-auditor\n\
         labels:\n  \
           app.kubernetes.io/name: cutover-auditor\n  \
           app.kubernetes.io/component: alerting\n  \
           app.kubernetes.io/part-of: cutover-auditor\n",
    )
    .unwrap_or_else(|e| panic!("expected metadata: {e}"));
    assert_eq!(resource["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(resource["kind"], "PrometheusRule");
    assert_eq!(resource["metadata"], expected_metadata);
    assert_eq!(
        resource["spec"], plain,
        "spec must equal the plain rules file"
    );
}

#[test]
fn alerts_match_the_contract() {
    let rules: RuleFile = parse_yaml(RULES);
    let alerts: BTreeMap<&str, &Rule> = rules
        .groups
        .iter()
        .flat_map(|group| &group.rules)
        .filter_map(|rule| rule.alert.as_deref().map(|name| (name, rule)))
        .collect();
    let promised: BTreeSet<&str> = ALERTS.iter().map(|(name, _)| *name).collect();
    let shipped: BTreeSet<&str> = alerts.keys().copied().collect();
    assert_eq!(shipped, promised, "shipped alerts");
    for (name, severity) in ALERTS {
        check_alert(name, alerts[name], severity);
    }
}

#[test]
fn every_runbook_belongs_to_an_alert() {
    let names: BTreeSet<&str> = ALERTS.iter().map(|(name, _)| *name).collect();
    let dir = root().join(RUNBOOKS);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        assert!(
            path.extension().is_some_and(|ext| ext == "md") && names.contains(stem),
            "{} is not the runbook of an alert; alerts: {names:?}",
            path.display()
        );
    }
}

#[test]
fn yamllint_accepts_the_rules() {
    let out = tool(
        "yamllint",
        &[
            "--strict",
            "-c",
            YAMLLINT_CONFIG,
            RULES,
            UNIT_TESTS,
            PROMETHEUS_RULE,
        ],
    );
    assert_success("yamllint", &out);
}

/// Checks one shipped alert against the contract: severity, annotations, and
/// a runbook that exists and has every section.
fn check_alert(name: &str, rule: &Rule, severity: &str) {
    assert_eq!(
        rule.labels.get("severity").map(String::as_str),
        Some(severity),
        "{name}: severity"
    );
    for key in ["summary", "description"] {
        let text = rule.annotations.get(key).map(String::as_str).unwrap_or("");
        assert!(!text.trim().is_empty(), "{name}: annotation {key} is empty");
    }
    let description = &rule.annotations["description"];
    assert!(
        description.contains("{{"),
        "{name}: the description must carry the numbers through templates"
    );
    let url = rule.annotations.get("runbook_url").map(String::as_str);
    assert_eq!(
        url,
        Some(format!("{RUNBOOK_URL_PREFIX}{name}.md").as_str()),
        "{name}: runbook_url"
    );
    let runbook_path = root().join(RUNBOOKS).join(format!("{name}.md"));
    let runbook = read(&runbook_path);
    assert!(
        runbook.starts_with(&format!("# {name}\n")),
        "{}: must start with `# {name}`",
        runbook_path.display()
    );
    let mut from = 0;
    for section in RUNBOOK_SECTIONS {
        let heading = format!("\n{section}\n");
        match runbook[from..].find(&heading) {
            Some(at) => from += at + heading.len(),
            None => panic!(
                "{}: missing `{section}` (sections, in order: {RUNBOOK_SECTIONS:?})",
                runbook_path.display()
            ),
        }
    }
}

/// Checks that a firing case of a unit test pins what users see: the
/// severity label and all three annotations, with their exact text.
fn check_expected_alert(file: &str, alertname: &str, alert: &ExpectedAlert) {
    assert!(
        alert.exp_labels.contains_key("severity"),
        "{file}: {alertname}: exp_labels must include severity"
    );
    for key in ["summary", "description", "runbook_url"] {
        assert!(
            alert.exp_annotations.contains_key(key),
            "{file}: {alertname}: exp_annotations must include {key}"
        );
    }
}

/// Copies the rules and their unit tests to a scratch directory, replaces
/// `from` by `to` in the rules (exactly once), and expects `promtool test
/// rules` to fail.
fn check_mutation_is_caught(from: &str, to: &str) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let rules = read(&root().join(RULES));
    assert_eq!(
        rules.matches(from).count(),
        1,
        "mutation `{from}` must match the rules exactly once"
    );
    let scratch = std::env::temp_dir().join(format!(
        "cutover-auditor-rules-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tests_dir = scratch.join("tests");
    fs::create_dir_all(&tests_dir).unwrap_or_else(|e| panic!("{}: {e}", tests_dir.display()));
    write(
        &scratch.join("cutover-auditor.rules.yaml"),
        &rules.replacen(from, to, 1),
    );
    let mut args = vec!["test".to_owned(), "rules".to_owned()];
    for file in unit_test_files(&root().join(UNIT_TESTS)) {
        let path = root().join(&file);
        let copy = tests_dir.join(path.file_name().unwrap_or_default());
        write(&copy, &read(&path));
        args.push(copy.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool("promtool", &args);
    let _ = fs::remove_dir_all(&scratch);
    assert!(
        !out.status.success(),
        "promtool test rules still passes after replacing `{from}` by `{to}`"
    );
}

/// A plain Prometheus rules file, as far as these tests read it. Unknown
/// fields are refused so a typo (`anotations`) cannot hide an annotation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    #[allow(dead_code)] // Read so that deny_unknown_fields accepts it.
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: Option<String>,
    #[allow(dead_code)]
    expr: String,
    #[allow(dead_code)]
    #[serde(rename = "for")]
    for_duration: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A `promtool test rules` file, only the parts these tests look at.
#[derive(Deserialize)]
struct UnitTestFile {
    rule_files: Vec<String>,
    tests: Vec<UnitTestGroup>,
}

#[derive(Deserialize)]
struct UnitTestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertRuleTest>,
}

#[derive(Deserialize)]
struct AlertRuleTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpectedAlert>,
}

#[derive(Deserialize)]
struct ExpectedAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a tool from the repository root. A tool that is not installed is a
/// failure, never a skip: the rules would otherwise ship unchecked.
fn tool(program: &str, args: &[&str]) -> Output {
    let package = match program {
        "promtool" => "prometheus",
        other => other,
    };
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}); install the Debian package `{package}` \
                 (tests/run-all.sh does)"
            )
        })
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unit-test files, sorted, as paths relative to the repository root
/// when `dir` is inside it.
fn unit_test_files(dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no unit tests in {}", dir.display());
    files
        .iter()
        .map(|path| {
            path.strip_prefix(root())
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect()
}

fn parse_yaml<T: for<'de> Deserialize<'de>>(relative: &str) -> T {
    let path = root().join(relative);
    serde_yaml_ng::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
