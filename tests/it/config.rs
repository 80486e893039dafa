//! Configuration: the example file documents the defaults, and every bad
//! file is rejected with a message naming the key and what is wrong.

use std::path::Path;
use std::time::Duration;

use cutover_auditor::config::{Config, ConfigError, LogFormat, Targets};

fn in_cluster(name: &str) -> Option<String> {
    match name {
        "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".into()),
        "KUBERNETES_SERVICE_PORT" => Some("443".into()),
        _ => None,
    }
}

fn nowhere(_: &str) -> Option<String> {
    None
}

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    std::fs::read_to_string(path).expect("config.example.toml is readable")
}

#[test]
fn example_config_loads_and_states_the_defaults() {
    let example = Config::parse(&example(), in_cluster).expect("example is valid");
    let defaults = Config::parse("", in_cluster).expect("empty config is valid in a cluster");
    assert_eq!(
        example, defaults,
        "config.example.toml must show the defaults"
    );
    assert_eq!(example.scrape.interval, Duration::from_secs(30));
    assert_eq!(example.cutovers.len(), 3);
    assert_eq!(example.log.format, LogFormat::Json);
    match &example.targets {
        Targets::Kubernetes(k) => {
            assert_eq!(k.api_server.as_str(), "https://10.96.0.1/");
            assert_eq!(k.server_name, "kubernetes");
        }
        other => panic!("expected kubernetes discovery, got {other:?}"),
    }
}

#[test]
fn static_targets_get_the_metrics_path() {
    let c = Config::parse(
        r#"
        [[targets.static]]
        url = "https://127.0.0.1:6443"
        [[targets.static]]
        url = "https://127.0.0.2:6443/metrics"
        server_name = "apiserver"
        [cutovers.legacy-auto-tokens]
        enabled = false
        "#,
        nowhere,
    )
    .expect("valid");
    let Targets::Static(targets) = &c.targets else {
        panic!("static expected")
    };
    let urls: Vec<_> = targets
        .iter()
        .map(|t| (t.url.as_str(), t.server_name.as_str()))
        .collect();
    assert_eq!(
        urls,
        [
            ("https://127.0.0.1:6443/metrics", "kubernetes"),
            ("https://127.0.0.2:6443/metrics", "apiserver")
        ]
    );
    let names: Vec<_> = c.cutovers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["legacy-tokens", "token-expiry-extension"]);
}

/// Checks that `text` is rejected with a message containing every `expected` part.
fn check(text: &str, expected: &[&str]) {
    let err = match Config::parse(text, nowhere) {
        Ok(c) => panic!("accepted {text:?}: {c:?}"),
        Err(e) => e,
    };
    let message = err.to_string();
    for part in expected {
        assert!(
            message.contains(part),
            "for {text:?}\n  message: {message}\n  missing: {part}"
        );
    }
}

const STATIC: &str = "[[targets.static]]\nurl = \"https://127.0.0.1:6443\"\n";

#[test]
fn bad_configs_name_the_key_and_the_problem() {
    let cases: &[(&str, &[&str])] = &[
        ("lissten = \"0.0.0.0:1\"", &["unknown field `lissten`"]),
        (
            "[scrape]\nintervall = \"30s\"",
            &["unknown field `intervall`", "interval"],
        ),
        (
            "listen = \"everywhere\"",
            &["listen: \"everywhere\" is not an address"],
        ),
        (
            "[scrape]\ninterval = \"soon\"",
            &["scrape.interval: \"soon\" is not a duration"],
        ),
        (
            "[scrape]\ninterval = \"0s\"",
            &["scrape.interval: must be longer than zero"],
        ),
        (
            "[scrape]\ninterval = \"10s\"\ntimeout = \"10s\"",
            &["scrape.timeout: must be shorter than scrape.interval (10s)"],
        ),
        (
            "[scrape]\nmax_body_bytes = 10",
            &["scrape.max_body_bytes: 10 is too small"],
        ),
        (
            "[scrape]\ninterval = 30",
            &["invalid type: integer `30`, expected a string"],
        ),
        (
            "",
            &["targets.kubernetes.api_server: not set and KUBERNETES_SERVICE_HOST"],
        ),
        (
            "[targets]\ndiscovery = \"dns\"",
            &["targets.discovery: \"dns\" is not a discovery mode"],
        ),
        (
            "[targets]\ndiscovery = \"static\"",
            &["targets.static: must list at least one apiserver"],
        ),
        (
            "[[targets.static]]\nurl = \"http://127.0.0.1:8080\"",
            &["targets.static[0].url: scheme \"http\" is not allowed here; use https"],
        ),
        (
            "[[targets.static]]\nurl = \"https://user:pw@127.0.0.1\"",
            &[
                "targets.static[0].url:",
                "credentials in URLs are not allowed",
            ],
        ),
        (
            "[[targets.static]]\nurl = \"127.0.0.1:6443\"",
            &["targets.static[0].url: \"127.0.0.1:6443\" is not a URL"],
        ),
        (
            "[[targets.static]]\nurl = \"https://a:1\"\n[[targets.static]]\nurl = \"https://a:1/metrics\"",
            &["targets.static[1].url: \"https://a:1/metrics\" is listed twice"],
        ),
        (
            "[[targets.static]]\nhost = \"a\"",
            &["unknown field `host`"],
        ),
        (
            &format!("{STATIC}[cutovers.legacy-token]\nwindow = \"7d\""),
            &["cutovers.legacy-token: unknown cutover; known ones are legacy-tokens"],
        ),
        (
            &format!("{STATIC}[cutovers.legacy-tokens]\nwindow = \"a week\""),
            &["cutovers.legacy-tokens.window: \"a week\" is not a duration"],
        ),
        (
            &format!("{STATIC}[cutovers.legacy-tokens]\nwindow = \"45s\""),
            &["cutovers.legacy-tokens.window: must span at least two scrape intervals"],
        ),
        (
            &format!(
                "{STATIC}[cutovers.token-expiry-extension]\nwindow = \"1h\"\ncoverage_tolerance = \"2h\""
            ),
            &[
                "cutovers.token-expiry-extension.coverage_tolerance: must be shorter than the window (1h)",
            ],
        ),
        (
            &format!("{STATIC}[cutovers.legacy-tokens]\nenabled = \"yes\""),
            &["invalid type: string \"yes\", expected a boolean"],
        ),
        (
            &format!("{STATIC}[log]\nformat = \"xml\""),
            &["unknown variant `xml`, expected `text` or `json`"],
        ),
        (
            &format!("{STATIC}[log]\nlevel = \"loud\""),
            &["log.level: log level \"loud\": \"loud\" is not a level"],
        ),
        (
            &format!("{STATIC}[alertmanager]\nurls = []"),
            &["alertmanager.urls: must list at least one Alertmanager"],
        ),
        (
            &format!("{STATIC}[alertmanager]\nurls = [\"ftp://am\"]"),
            &["alertmanager.urls[0]: scheme \"ftp\" is not allowed here"],
        ),
        (
            &format!("{STATIC}[alertmanager]\nurls = [\"http://am:9093\", \"https://am2:9093\"]"),
            &["alertmanager.urls[1]: scheme \"https\" is not allowed here; use http"],
        ),
        // Several problems are all reported at once.
        (
            "[scrape]\ninterval = \"x\"\n[log]\nlevel = \"loud\"",
            &[
                "scrape.interval: \"x\" is not a duration",
                "log.level: log level \"loud\": \"loud\" is not a level",
                "targets.kubernetes.api_server",
            ],
        ),
    ];
    for (text, expected) in cases {
        check(text, expected);
    }
}

#[test]
fn unreadable_file_names_the_path() {
    let err = Config::load(Path::new("/nonexistent/cutover.toml"), nowhere).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().contains("/nonexistent/cutover.toml"),
        "{err}"
    );
}

/// The example with the TOML lines of the block that starts at `header`
/// (a commented table header) uncommented, up to the next blank line.
fn uncomment(text: &str, header: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut found = false;
    for line in text.lines() {
        if line == header {
            inside = true;
            found = true;
        } else if line.trim().is_empty() {
            inside = false;
        }
        // Only TOML lines (a table header or `key = value`), not the prose.
        let is_toml = |rest: &str| {
            rest.starts_with('[')
                || rest.split_once(" = ").is_some_and(|(key, _)| {
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        };
        let line = match line.strip_prefix("# ") {
            Some(rest) if inside && is_toml(rest) => rest,
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    assert!(found, "{header:?} is in config.example.toml");
    out
}

#[test]
fn uncommenting_the_example_static_block_gives_a_valid_config() {
    let text = uncomment(&example(), "# [[targets.static]]");
    assert!(text.contains("\n[[targets.static]]\nurl = \"https://10.0.0.1:6443\""));
    for env in [in_cluster as fn(&str) -> Option<String>, nowhere] {
        let c = Config::parse(&text, env).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let Targets::Static(targets) = &c.targets else {
            panic!("static expected, got {:?}", c.targets)
        };
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].url.as_str(), "https://10.0.0.1:6443/metrics");
        assert_eq!(targets[0].server_name, "kubernetes");
        assert_eq!(
            targets[0].ca_file,
            Path::new("/etc/kubernetes/pki/ca.crt"),
            "the block's keys are used"
        );
    }
}

#[test]
fn uncommenting_the_example_kubernetes_block_gives_the_defaults() {
    let text = uncomment(&example(), "# [targets.kubernetes]");
    assert!(text.contains("\n[targets.kubernetes]\n"));
    assert!(text.contains("\ntoken_file = \"/var/run/secrets/"));
    let c = Config::parse(&text, in_cluster).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c, Config::parse("", in_cluster).expect("defaults"));
}

#[test]
fn the_kubernetes_service_is_refused_as_a_static_target_unless_allowed() {
    let service_env = |host: &'static str| {
        move |name: &str| match name {
            "KUBERNETES_SERVICE_HOST" => Some(host.to_owned()),
            "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
            _ => None,
        }
    };
    let refused: &[(&str, &str, &str)] = &[
        (
            "https://kubernetes",
            "10.96.0.1",
            "host name \"kubernetes\"",
        ),
        (
            "https://kubernetes.default:443",
            "10.96.0.1",
            "kubernetes.default",
        ),
        (
            "https://kubernetes.default.svc/metrics",
            "10.96.0.1",
            "kubernetes.default.svc",
        ),
        (
            "https://Kubernetes.Default.svc.cluster.local.:443",
            "10.96.0.1",
            "kubernetes.default.svc.cluster.local",
        ),
        (
            "https://10.96.0.1:443",
            "10.96.0.1",
            "KUBERNETES_SERVICE_HOST is 10.96.0.1",
        ),
        (
            "https://[fd00:0::1]:443",
            "fd00::1",
            "KUBERNETES_SERVICE_HOST is fd00::1",
        ),
    ];
    for (url, host, why) in refused {
        let text = format!("[[targets.static]]\nurl = \"{url}\"\n");
        let message = Config::parse(&text, service_env(host))
            .expect_err(url)
            .to_string();
        for part in [
            &format!("targets.static[0].url: \"{url}\" is the `kubernetes` Service"),
            *why,
            "use [targets.kubernetes] discovery or list each apiserver's own address",
            "allow_service_address = true",
        ] {
            assert!(
                message.contains(part),
                "{url}: {message}\n  missing: {part}"
            );
        }
        let allowed = format!("{text}allow_service_address = true\n");
        Config::parse(&allowed, service_env(host))
            .unwrap_or_else(|e| panic!("{url} allowed explicitly: {e}"));
    }
    // Instance addresses and names that merely look alike are targets.
    for url in [
        "https://10.96.0.10:6443",
        "https://kubernetes-api.example:6443",
        "https://kubernetes.example.com",
        "https://kubernetes.default.svc-proxy",
    ] {
        let text = format!("[[targets.static]]\nurl = \"{url}\"\n");
        Config::parse(&text, service_env("10.96.0.1")).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn a_coverage_tolerance_below_one_scrape_round_is_refused() {
    check(
        &format!(
            "{STATIC}[cutovers.legacy-tokens]\ncoverage_tolerance = \"30s\"\n\
             [cutovers.token-expiry-extension]\ncoverage_tolerance = \"0s\""
        ),
        &[
            "cutovers.legacy-tokens.coverage_tolerance: 30s is shorter than one scrape round (scrape.interval 30s + scrape.timeout 10s)",
            "set at least 40s",
            "cutovers.token-expiry-extension.coverage_tolerance: 0s is shorter than one scrape round",
        ],
    );
    // Exactly one round is enough.
    let c = Config::parse(
        &format!("{STATIC}[cutovers.legacy-tokens]\ncoverage_tolerance = \"40s\""),
        nowhere,
    )
    .expect("one round is enough");
    assert_eq!(c.cutovers[0].tolerance, Duration::from_secs(40));
    // An unset tolerance grows to one round when the scrapes are slow.
    let c = Config::parse(
        &format!("{STATIC}[scrape]\ninterval = \"10m\"\ntimeout = \"1m\""),
        nowhere,
    )
    .expect("default tolerance follows the interval");
    for spec in &c.cutovers {
        assert_eq!(spec.tolerance, Duration::from_secs(660), "{}", spec.name);
    }
}

/// A directory with the given files, removed on drop.
struct Files(std::path::PathBuf);

impl Files {
    fn new(name: &str, files: &[(&str, &[u8])]) -> Files {
        let dir =
            std::env::temp_dir().join(format!("cutover-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        for (file, content) in files {
            std::fs::write(dir.join(file), content).expect("write");
        }
        Files(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn check_files_names_each_missing_or_unusable_file_and_its_key() {
    let ca = cutover_auditor::simulator::tls::ClusterCa::generate().expect("CA");
    let not_a_cert = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let cut = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    let f = Files::new(
        "files",
        &[
            ("token", b"s3cr3t-token\n"),
            ("empty-token", b"\n"),
            ("ca.crt", ca.pem().as_bytes()),
            ("junk.crt", b"this is not PEM at all\n"),
            ("not-a-cert.crt", not_a_cert.as_bytes()),
            ("cut.crt", cut.as_bytes()),
        ],
    );
    let static_target = |token: &str, ca: &str| {
        format!(
            "[[targets.static]]\nurl = \"https://127.0.0.1:6443/{token}/{ca}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n",
            f.path(token),
            f.path(ca)
        )
    };
    let good = Config::parse(&static_target("token", "ca.crt"), nowhere).expect("valid");
    good.check_files().expect("the files are usable");

    let cases: &[(String, &[&str])] = &[
        (
            static_target("missing-token", "ca.crt"),
            &[
                "targets.static[0].token_file: cannot read token file",
                "missing-token",
            ],
        ),
        (
            static_target("empty-token", "ca.crt"),
            &[
                "targets.static[0].token_file: token file",
                "empty-token",
                "is empty",
            ],
        ),
        (
            static_target("token", "missing.crt"),
            &[
                "targets.static[0].ca_file: cannot read CA file",
                "missing.crt",
            ],
        ),
        (
            static_target("token", "junk.crt"),
            &[
                "targets.static[0].ca_file: CA file",
                "junk.crt",
                "holds no PEM certificate",
            ],
        ),
        (
            static_target("token", "not-a-cert.crt"),
            &[
                "targets.static[0].ca_file: CA file",
                "not-a-cert.crt",
                "certificate 1 does not parse",
            ],
        ),
        (
            static_target("token", "cut.crt"),
            &[
                "targets.static[0].ca_file: CA file",
                "cut.crt",
                "is not a PEM bundle",
            ],
        ),
        (
            format!(
                "{}{}",
                static_target("token", "ca.crt"),
                static_target("missing-token", "missing.crt")
            ),
            &[
                "targets.static[1].token_file:",
                "targets.static[1].ca_file:",
            ],
        ),
        (
            format!(
                "[targets.kubernetes]\napi_server = \"https://10.96.0.1\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n",
                f.path("missing-token"),
                f.path("junk.crt")
            ),
            &[
                "targets.kubernetes.token_file:",
                "targets.kubernetes.ca_file:",
            ],
        ),
    ];
    for (text, expected) in cases {
        let config = Config::parse(text, nowhere).expect("parses");
        let err = config.check_files().expect_err(text);
        assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
        let message = err.to_string();
        for part in *expected {
            assert!(
                message.contains(part),
                "{text}\n  message: {message}\n  missing: {part}"
            );
        }
        assert!(!message.contains("s3cr3t"), "{message}");
    }
}

#[test]
fn shipped_configs_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config.example.toml", "deploy/base/config.toml"] {
        let text = std::fs::read_to_string(root.join(file)).expect("readable");
        Config::parse(&text, in_cluster).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn durations_are_bounded_and_never_panic() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[scrape]\ninterval = \"300000000000y\"",
            &["scrape.interval: \"300000000000y\""],
        ),
        (
            "[scrape]\ninterval = \"2h\"",
            &["scrape.interval: \"2h\" is longer than the longest allowed, 1h"],
        ),
        (
            "[cutovers.legacy-tokens]\nwindow = \"18446744073709551615s\"",
            &["cutovers.legacy-tokens.window: \"18446744073709551615s\""],
        ),
        (
            "[cutovers.legacy-tokens]\nwindow = \"91d\"",
            &["cutovers.legacy-tokens.window: \"91d\" is longer than the longest allowed, 90d"],
        ),
        (
            "[state]\nwrite_interval = \"100000d\"",
            &["state.write_interval: \"100000d\" is longer than the longest allowed, 1d"],
        ),
        (
            "[alertmanager]\nurls = [\"http://127.0.0.1:9093\"]\ntimeout = \"1d\"",
            &["alertmanager.timeout: \"1d\" is longer than the longest allowed, 5m"],
        ),
    ];
    for (text, expected) in cases {
        check(&format!("{STATIC}{text}"), expected);
    }
    // Every bound is accepted.
    Config::parse(
        &format!("{STATIC}[scrape]\ninterval = \"1h\"\n[cutovers.legacy-tokens]\nwindow = \"90d\""),
        nowhere,
    )
    .expect("the longest values are allowed");
}

#[test]
fn log_level_is_checked_by_the_parser_logging_uses() {
    for bad in ["cutover_auditor=loud", "=debug", "inf", ""] {
        let text = format!("{STATIC}[log]\nlevel = \"{bad}\"");
        check(&text, &["log.level"]);
        assert!(cutover_auditor::telemetry::filter(bad).is_err(), "{bad:?}");
    }
    for good in [
        "off",
        "warn",
        "cutover_auditor=debug",
        "warn,cutover_auditor=trace",
    ] {
        let text = format!("{STATIC}[log]\nlevel = \"{good}\"");
        Config::parse(&text, nowhere).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        assert!(cutover_auditor::telemetry::filter(good).is_ok(), "{good:?}");
    }
}

#[test]
fn a_state_path_that_is_not_a_regular_file_is_refused() {
    let f = Files::new("state-path", &[("token", b"t0ken\n")]);
    let ca = cutover_auditor::simulator::tls::ClusterCa::generate().expect("CA");
    std::fs::write(f.path("ca.crt"), ca.pem()).unwrap();
    std::fs::create_dir_all(f.path("a-directory")).unwrap();
    let config = |state: &str| {
        Config::parse(
            &format!(
                "[[targets.static]]\nurl = \"https://127.0.0.1:6443\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n[state]\npath = \"{state}\"\n",
                f.path("token"),
                f.path("ca.crt"),
            ),
            nowhere,
        )
        .expect("valid")
    };
    for (path, kind) in [
        (f.path("a-directory"), "is a directory"),
        ("/dev/null".to_owned(), "is a character device"),
    ] {
        let err = config(&path).check_files().expect_err(&path).to_string();
        assert!(
            err.contains("state.path: state file") && err.contains(kind),
            "{err}"
        );
    }
    // Absent or a regular file is fine; nothing was moved or created.
    config(&f.path("state.json")).check_files().expect("absent");
    std::fs::write(f.path("state.json"), b"{}").unwrap();
    config(&f.path("state.json"))
        .check_files()
        .expect("regular");
    assert!(std::path::Path::new("/dev/null").exists());
    // The state module itself never moves a non-regular path aside.
    let now = cutover_auditor::time::Timestamp::from_secs(1_800_000_000);
    assert!(
        cutover_auditor::state::load(std::path::Path::new(&f.path("a-directory")), now).is_err()
    );
    assert!(std::path::Path::new(&f.path("a-directory")).is_dir());
    let entries = std::fs::read_dir(&f.0).unwrap().count();
    assert_eq!(entries, 4, "nothing moved aside");
}

#[test]
fn series_caps_are_configurable_and_bounded() {
    let c = Config::parse(
        &format!("{STATIC}[scrape]\nmax_series_per_family = 8\nmax_series_per_page = 40"),
        nowhere,
    )
    .expect("valid");
    assert_eq!(
        (c.scrape.max_series_per_family, c.scrape.max_series_per_page),
        (8, 40)
    );
    let d = Config::parse(STATIC, nowhere).expect("valid");
    assert_eq!(
        (d.scrape.max_series_per_family, d.scrape.max_series_per_page),
        (
            cutover_auditor::exposition::DEFAULT_MAX_SERIES_PER_FAMILY,
            cutover_auditor::exposition::DEFAULT_MAX_SERIES_PER_PAGE
        )
    );
    check(
        &format!("{STATIC}[scrape]\nmax_series_per_family = 0"),
        &["scrape.max_series_per_family: 0 is outside 1..=100000"],
    );
    check(
        &format!("{STATIC}[scrape]\nmax_series_per_page = 1000000"),
        &["scrape.max_series_per_page: 1000000 is outside 1..=100000"],
    );
}
