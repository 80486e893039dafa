//! The `cutover-auditor` binary: a thin command-line shell over the library.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cutover_auditor::clock::Clock;
use cutover_auditor::config::{Config, ConfigError, LogFormat};
use cutover_auditor::daemon::{self, Event};
use cutover_auditor::exposition::{ReadPageError, Watch, extract_from_reader};
use cutover_auditor::inspect::{self, Format};
use cutover_auditor::simulator::{self, Options as SimOptions, Simulation, scenario::Scenario};
use cutover_auditor::telemetry;

const USAGE: &str = "\
Usage: cutover-auditor <COMMAND>

Commands:
  serve --config FILE [--check-config]
      Run the daemon. With --check-config, validate the configuration, print
      what is wrong, and exit 0 (valid) or 64 (invalid).

  demo [--listen ADDR] [--speed N] [--for DURATION]
      Simulated apiservers (tests/scenarios/demo.toml, built in) and the
      daemon on one accelerated clock (default 60: one real second is one
      simulated minute). Prints the status page and /metrics URLs, then each
      verdict change. Stops on Ctrl-C, or after DURATION of simulated time.

  inspect [--format text|json] [FILE|-]
      Print the token counters, absent families, process start time and
      Kubernetes version of one kube-apiserver /metrics page (plain or gzip)
      read from FILE or stdin. Exit 65 on a malformed watched line, 66 on
      unreadable input.

  simulate --scenario FILE [--dir DIR]
      Run only the simulated kube-apiservers of a scenario (TLS, tokens,
      discovery, scripted clients) until Ctrl-C or the scenario's duration.
      The CA and token files are written to DIR (default: a temp directory).
      Scenario format: docs/scenarios.md.

Options:
  -h, --help     Print this help
  -V, --version  Print the version
";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cutover-auditor: {err:#}");
            if err.downcast_ref::<Usage>().is_some() {
                eprint!("\n{USAGE}");
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

/// A command-line mistake: printed with the usage, exit 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn usage(err: impl std::fmt::Display) -> anyhow::Error {
    Usage(err.to_string()).into()
}

/// The sysexits status for an error, found from the typed errors in its chain.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<Usage>() || cause.is::<ConfigError>() {
            return inspect::EX_USAGE;
        }
        if let Some(page) = cause.downcast_ref::<ReadPageError>() {
            return inspect::exit_code(page);
        }
        if cause.is::<io::Error>() {
            return inspect::EX_NOINPUT;
        }
    }
    1
}

fn run() -> anyhow::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let Some(arg) = parser.next().map_err(usage)? else {
        return Err(usage("no command given"));
    };
    match arg {
        Short('h') | Long("help") => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Short('V') | Long("version") => {
            println!("cutover-auditor {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Value(cmd) if cmd == "inspect" => cmd_inspect(parser),
        Value(cmd) if cmd == "simulate" => cmd_simulate(parser),
        Value(cmd) if cmd == "serve" => cmd_serve(parser),
        Value(cmd) if cmd == "demo" => cmd_demo(parser),
        Value(cmd) => Err(usage(format!(
            "unknown command {:?}",
            cmd.to_string_lossy()
        ))),
        other => Err(usage(other.unexpected())),
    }
}

fn cmd_inspect(mut parser: lexopt::Parser) -> anyhow::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut format = Format::Text;
    let mut input: Option<OsString> = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("format") => {
                let value = parser.value().map_err(usage)?;
                format = value.to_string_lossy().parse().map_err(usage)?;
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            Value(path) if input.is_none() => input = Some(path),
            other => return Err(usage(other.unexpected())),
        }
    }
    let watch = Watch::default_families();
    let page = match input {
        Some(path) if path != "-" => {
            let name = path.to_string_lossy().into_owned();
            let file = File::open(&path).with_context(|| format!("cannot open {name}"))?;
            extract_from_reader(watch, file).with_context(|| format!("reading {name}"))?
        }
        _ => extract_from_reader(watch, io::stdin().lock()).context("reading stdin")?,
    };
    let mut out = io::stdout().lock();
    // A closed stdout is not unreadable input: keep io::Error out of the chain.
    out.write_all(inspect::render(&page, format).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|err| anyhow::anyhow!("writing the report: {err}"))?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_simulate(mut parser: lexopt::Parser) -> anyhow::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut scenario: Option<PathBuf> = None;
    let mut dir: Option<PathBuf> = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("scenario") => scenario = Some(parser.value().map_err(usage)?.into()),
            Long("dir") => dir = Some(parser.value().map_err(usage)?.into()),
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    let scenario = scenario.ok_or_else(|| usage("simulate needs --scenario FILE"))?;
    runtime()?.block_on(async {
        let ctrl_c = async {
            // Without a signal handler Ctrl-C would kill the process before
            // the listeners close; if it cannot be installed, run until the
            // scenario ends.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        simulator::simulate_from_file(&scenario, dir, ctrl_c)
            .await
            .with_context(|| format!("simulating {}", scenario.display()))
    })?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn cmd_serve(mut parser: lexopt::Parser) -> anyhow::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut config_path: Option<PathBuf> = None;
    let mut check_only = false;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("config") => config_path = Some(parser.value().map_err(usage)?.into()),
            Long("check-config") => check_only = true,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    let path = config_path.ok_or_else(|| usage("serve needs --config FILE"))?;
    let config = Config::load(&path, |name| std::env::var(name).ok())
        .and_then(|config| config.check_files().map(|()| config))
        .with_context(|| format!("{}", path.display()))?;
    if check_only {
        println!(
            "{}: valid ({} cutovers, scrape every {})",
            path.display(),
            config.cutovers.len(),
            humantime::format_duration(config.scrape.interval)
        );
        return Ok(ExitCode::SUCCESS);
    }
    telemetry::init(config.log.format, &config.log.level)?;
    runtime()?.block_on(async {
        let options = daemon::Options {
            config,
            clock: Clock::real(),
            listener: None,
            events: None,
        };
        daemon::run(options, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
async fn shutdown_signal() {
    // SIGTERM: Kubernetes sends it to start a graceful shutdown. SIGINT: Ctrl-C.
    let first = wait_for_signal().await;
    tracing::info!(
        signal = first,
        "signal received: draining (a second signal exits at once)"
    );
    tokio::spawn(async {
        let second = wait_for_signal().await;
        eprintln!("cutover-auditor: second {second}: exiting without draining");
        std::process::exit(130);
    });
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            // Without handlers the default action (exit) applies anyway.
            std::future::pending::<()>().await;
            "none"
        }
    }
}

/// The scenario behind `demo`, built into the binary.
const DEMO_SCENARIO: &str = include_str!("../tests/scenarios/demo.toml");

fn cmd_demo(mut parser: lexopt::Parser) -> anyhow::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut listen = String::from("127.0.0.1:9877");
    let mut speed: Option<f64> = None;
    let mut stop_after: Option<std::time::Duration> = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("listen") => {
                listen = parser
                    .value()
                    .map_err(usage)?
                    .to_string_lossy()
                    .into_owned()
            }
            Long("speed") => {
                let value = parser
                    .value()
                    .map_err(usage)?
                    .to_string_lossy()
                    .into_owned();
                let n: f64 = value
                    .parse()
                    .map_err(|_| usage(format!("--speed {value:?} is not a number")))?;
                if !(n.is_finite() && (1.0..=10_000.0).contains(&n)) {
                    return Err(usage("--speed must be between 1 and 10000"));
                }
                speed = Some(n);
            }
            Long("for") => {
                let value = parser
                    .value()
                    .map_err(usage)?
                    .to_string_lossy()
                    .into_owned();
                stop_after = Some(
                    humantime::parse_duration(&value)
                        .map_err(|e| usage(format!("--for {value:?}: {e}")))?,
                );
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    let mut scenario = Scenario::parse(DEMO_SCENARIO).context("the built-in demo scenario")?;
    if let Some(speed) = speed {
        scenario.speed = speed;
    }
    telemetry::init(LogFormat::Text, "warn")?;
    runtime()?.block_on(demo(scenario, listen, stop_after))?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(
    scenario: Scenario,
    listen: String,
    stop_after: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("cutover-auditor-demo-{}", std::process::id()));
    let start = Clock::real().now();
    let clock = Clock::accelerated(start, scenario.speed);
    let sim = Simulation::start(&scenario, clock.clone(), SimOptions::in_dir(&dir))
        .await
        .context("starting the simulated apiservers")?;
    // The demo's windows are short so that verdicts change within minutes.
    let config_text = format!(
        r#"
listen = "{listen}"
[scrape]
interval = "30s"
timeout = "10s"
[targets]
discovery = "kubernetes"
[targets.kubernetes]
api_server = "https://{service}"
token_file = "{token}"
ca_file = "{ca}"
refresh_interval = "1m"
[cutovers.legacy-tokens]
window = "30m"
[cutovers.legacy-auto-tokens]
window = "30m"
[cutovers.token-expiry-extension]
window = "30m"
[state]
path = "{state}"
[log]
format = "text"
level = "warn"
"#,
        service = sim.service_address(),
        token = sim.token_path().display(),
        ca = sim.ca_path().display(),
        state = dir.join("state.json").display(),
    );
    let config = Config::parse(&config_text, |_| None).context("the demo configuration")?;
    let windows: Vec<String> = config
        .cutovers
        .iter()
        .map(|c| format!("{} {}", c.name, humantime::format_duration(c.window)))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(daemon::run(
        daemon::Options {
            config,
            clock: clock.clone(),
            listener: None,
            events: Some(tx),
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    println!(
        "cutover-auditor demo: {} simulated apiservers, clock at {}x (one real second is {} simulated)",
        sim.instance_addresses().len(),
        scenario.speed,
        humantime::format_duration(std::time::Duration::from_secs_f64(scenario.speed.round()))
    );
    println!("windows (shortened for the demo): {}", windows.join(", "));
    let stop = async {
        match stop_after {
            Some(d) => {
                tokio::select! {
                    _ = clock.sleep(d) => {}
                    _ = shutdown_signal() => {}
                }
            }
            None => shutdown_signal().await,
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = rx.recv() => match event {
                Some(Event::Listening(addr)) => {
                    println!("status page: http://{addr}/");
                    println!("metrics:     http://{addr}/metrics");
                    println!("JSON status: http://{addr}/api/v1/status");
                }
                Some(Event::Transition { at, transition, assessment }) => {
                    let elapsed = humantime::format_duration(std::time::Duration::from_secs(at.since(start).as_secs()));
                    let from = transition.from.map_or("(start)", |s| s.label());
                    let mut line = format!("[+{elapsed}] {}: {from} -> {} ({}", transition.cutover, transition.to, transition.reason);
                    if assessment.increase > 0 {
                        let plural = if assessment.increase == 1 { "" } else { "s" };
                        line.push_str(&format!(", {} use{plural} in the window", assessment.increase));
                    }
                    if let Some(d) = assessment.ready_in.filter(|d| !d.is_zero()) {
                        line.push_str(&format!(", ready in {} if quiet", humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))));
                    }
                    if transition.regression {
                        line.push_str(", REGRESSION");
                    }
                    line.push(')');
                    println!("{line}");
                }
                Some(Event::Resumed(_)) => {}
                None => break,
            }
        }
    }
    let _ = stop_tx.send(());
    daemon.await.context("the daemon task")??;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
