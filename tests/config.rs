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
            assert_eq!(k.api_server, "https://10.96.0.1:443");
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
            &["log.level: \"loud\" is not a level"],
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
                "log.level: \"loud\" is not a level",
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
