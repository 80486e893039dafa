//! The `cutover-auditor` binary: a thin command-line shell over the library.

// Shell (I/O allowed, see clippy.toml): files, environment, clock, exit.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cutover_auditor::check::{self, CheckError, Origin};
use cutover_auditor::clock::Clock;
use cutover_auditor::config::{Config, ConfigError, LogFormat};
use cutover_auditor::daemon::{self, DaemonError, Event};
use cutover_auditor::exposition::{ReadPageError, Watch, extract_from_reader};
use cutover_auditor::inspect::{self, Format};
use cutover_auditor::simulator::scenario::{Action, Scenario};
use cutover_auditor::simulator::{
    self, Options as SimOptions, SimError, SimulateOptions, Simulation,
};
use cutover_auditor::state::StateError;
use cutover_auditor::telemetry;
use cutover_auditor::time::Timestamp;

const USAGE: &str = "\
Usage: cutover-auditor <COMMAND>

Commands:
  serve --config FILE [--check-config] [--speed N --clock-start SIM@REAL]
      Run the daemon. With --check-config, validate the configuration, print
      what is wrong, and exit 0 (valid) or 64 (invalid). --speed and
      --clock-start (as printed by `simulate`) run it on the clock of
      simulated apiservers: N simulated seconds per real second, SIM the
      simulated Unix time at real Unix time REAL. Exit 69 when the listen
      address cannot be bound, 70 when an essential task failed (after
      draining), 74 when the state write at shutdown failed.

  demo [--listen ADDR] [--speed N] [--for DURATION]
      Simulated apiservers (tests/scenarios/demo.toml, built in) and the
      daemon on one accelerated clock (default 60: one real second is one
      simulated minute). Prints the status page and /metrics URLs, then each
      verdict change and scripted event (restart, token rotation). Stops on
      Ctrl-C, or after DURATION of simulated time (90s, 15m, 2h). Exit 69
      when the listen address is taken.

  inspect [--format text|json] [FILE|-]
      Print the token counters, absent families, process start time and
      Kubernetes version of one kube-apiserver /metrics page (plain or gzip)
      read from FILE or stdin. Exit 65 on a malformed watched line or input
      without any exposition line, 66 on unreadable input.

  check [--config FILE] [--state FILE] [--cutover NAME]... [--format text|json]
        [--at RFC3339]
      One verdict for a pipeline or a deploy hook, from the daemon's state
      file (--state, or state.path of the config; read only, never moved or
      written), judged as the daemon judges it, at now or --at (e.g.
      2026-12-04T18:00:00Z). Cutovers and windows from --config (default: the
      built-ins); --cutover limits the ones judged (repeatable). Text lines per
      cutover (state, reason, coverage, uses, ready_in, blocking instances),
      or --format json, the /api/v1/status shape. Exit 0 when every one is
      ready, 1 when any is not, 64 on a bad command line or config or an
      unknown cutover, 66 when the state file is missing, unreadable, corrupt
      or from a future version or clock.

  simulate --scenario FILE [--dir DIR] [--speed N]
      Run only the simulated kube-apiservers of a scenario (TLS, tokens,
      discovery, scripted clients) until Ctrl-C, SIGTERM or the scenario's
      duration, at the scenario's speed or N (1: real time). The CA, token
      and a daemon configuration (cutover-auditor.toml) are written to DIR
      (default: a temp directory, removed on exit), and the `serve` command
      that audits the simulation is printed. Scenario format: docs/scenarios.md.

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

/// Exit status when a port cannot be bound, e.g. the address is in use
/// (sysexits `EX_UNAVAILABLE`: a service the command needs is unavailable).
const EX_UNAVAILABLE: u8 = 69;

/// Exit status when the state file could not be written at shutdown
/// (sysexits `EX_IOERR`): evidence since the last successful write is lost.
const EX_IOERR: u8 = 74;

/// Exit status when an essential task of the daemon failed (sysexits
/// `EX_SOFTWARE`: an internal error); the supervisor restarts the daemon.
const EX_SOFTWARE: u8 = 70;

/// The admin or a simulated address could not be bound: the address, why in
/// words, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {}: {hint}", bind_reason(cause))]
struct ListenError {
    addr: String,
    cause: io::Error,
    hint: String,
}

fn bind_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_owned(),
        io::ErrorKind::AddrNotAvailable => "no such local address".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    }
}

/// The daemon's error, with `hint` when it is a bind failure.
fn listen_hint(err: DaemonError, hint: &str) -> anyhow::Error {
    match err {
        DaemonError::Listen { addr, source } => ListenError {
            addr: addr.to_string(),
            cause: source,
            hint: hint.to_owned(),
        }
        .into(),
        other => other.into(),
    }
}

/// The simulator's error, with `hint` when it is a bind failure.
fn sim_listen_hint(err: SimError, hint: &str) -> anyhow::Error {
    match err {
        SimError::Bind { addr, source } => ListenError {
            addr,
            cause: source,
            hint: hint.to_owned(),
        }
        .into(),
        other => other.into(),
    }
}

/// The sysexits status for an error, found from the typed errors in its chain.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<Usage>() || cause.is::<ConfigError>() {
            return inspect::EX_USAGE;
        }
        if cause.is::<ListenError>() {
            return EX_UNAVAILABLE;
        }
        match cause.downcast_ref::<DaemonError>() {
            Some(DaemonError::FinalStateWrite(_)) => return EX_IOERR,
            Some(DaemonError::TaskFailed { .. }) => return EX_SOFTWARE,
            _ => {}
        }
        if let Some(err) = cause.downcast_ref::<CheckError>() {
            return err.exit_code();
        }
        if cause.is::<inspect::NoExposition>() {
            return inspect::EX_DATAERR;
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
        Value(cmd) if cmd == "check" => cmd_check(parser),
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
    let (page, name) = match input {
        Some(path) if path != "-" => {
            let name = path.to_string_lossy().into_owned();
            let file = File::open(&path).with_context(|| format!("cannot open {name}"))?;
            let page =
                extract_from_reader(watch, file).with_context(|| format!("reading {name}"))?;
            (page, name)
        }
        _ => (
            extract_from_reader(watch, io::stdin().lock()).context("reading stdin")?,
            "stdin".to_owned(),
        ),
    };
    inspect::check(&page).with_context(|| format!("reading {name}"))?;
    let mut out = io::stdout().lock();
    // A closed stdout is not unreadable input: keep io::Error out of the chain.
    out.write_all(inspect::render(&page, format).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|err| anyhow::anyhow!("writing the report: {err}"))?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(mut parser: lexopt::Parser) -> anyhow::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut config_path: Option<PathBuf> = None;
    let mut state_path: Option<PathBuf> = None;
    let mut cutovers: Vec<String> = Vec::new();
    let mut format = Format::Text;
    let mut at: Option<Timestamp> = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("config") => config_path = Some(parser.value().map_err(usage)?.into()),
            Long("state") => state_path = Some(parser.value().map_err(usage)?.into()),
            Long("cutover") => {
                let value = parser.value().map_err(usage)?;
                cutovers.push(value.to_string_lossy().into_owned());
            }
            Long("format") => {
                let value = parser.value().map_err(usage)?;
                format = value.to_string_lossy().parse().map_err(usage)?;
            }
            Long("at") => {
                let value = parser.value().map_err(usage)?;
                let value = value.to_string_lossy();
                let t = humantime::parse_rfc3339(&value).map_err(|e| {
                    usage(format!(
                        "--at {value:?}: {e}; expected RFC 3339 in UTC, e.g. 2026-12-04T18:00:00Z"
                    ))
                })?;
                at = Some(Timestamp::from_system_time(t));
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    let config = match &config_path {
        // `check` never contacts the apiservers: outside a cluster, the
        // in-cluster address a config may rely on is not needed.
        Some(path) => Config::load(path, |name| {
            std::env::var(name).ok().or_else(|| match name {
                "KUBERNETES_SERVICE_HOST" => Some("kubernetes.default.svc".to_owned()),
                "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
                _ => None,
            })
        })
        .with_context(|| format!("{}", path.display()))?,
        None => check::default_config(),
    };
    let path = state_path
        .or_else(|| config.state.path.clone())
        .ok_or_else(|| {
            usage("no state file to judge: pass --state FILE, or set state.path in the config")
        })?;
    let now = at.unwrap_or_else(|| Clock::real().now());
    let snapshot = read_state(&path)?;
    let report = check::judge(&config, snapshot, Origin::StateFile(path), &cutovers, now).map_err(
        |err| match err {
            // A time given on the command line before the evidence ends.
            CheckError::EvidenceAfterNow { .. } if at.is_some() => usage(err),
            err => err.into(),
        },
    )?;
    let mut out = io::stdout().lock();
    out.write_all(report.render(format).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|err| anyhow::anyhow!("writing the report: {err}"))?;
    Ok(ExitCode::from(report.exit_code()))
}

/// Reads the state file for `check`, read only: a missing, unreadable or
/// corrupt file is an error naming it, and is left exactly as it is.
fn read_state(path: &std::path::Path) -> Result<cutover_auditor::state::Snapshot, CheckError> {
    let unreadable = |reason: String| CheckError::Unreadable {
        origin: Origin::StateFile(path.to_owned()),
        reason,
    };
    // A directory or a FIFO is refused before it is opened (a FIFO would block).
    cutover_auditor::state::check_path(path).map_err(|e| {
        unreadable(match e {
            StateError::NotAFile { kind, .. } => format!("is {kind}, not a regular file"),
            StateError::Unusable { source, .. } => format!("unusable: {source}"),
            other => other.to_string(),
        })
    })?;
    let bytes = std::fs::read(path).map_err(|e| {
        unreadable(if e.kind() == io::ErrorKind::NotFound {
            "missing (the daemon writes it every state.write_interval; is --state the daemon's state.path?)".to_owned()
        } else {
            format!("unreadable: {e}")
        })
    })?;
    cutover_auditor::state::decode(&bytes)
        .map_err(|reason| unreadable(format!("{reason} (left in place)")))
}

fn cmd_simulate(mut parser: lexopt::Parser) -> anyhow::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut scenario: Option<PathBuf> = None;
    let mut options = SimulateOptions::default();
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("scenario") => scenario = Some(parser.value().map_err(usage)?.into()),
            Long("dir") => options.dir = Some(parser.value().map_err(usage)?.into()),
            Long("speed") => options.speed = Some(parse_speed(&mut parser)?),
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    let scenario = scenario.ok_or_else(|| usage("simulate needs --scenario FILE"))?;
    runtime()?.block_on(async {
        // SIGINT (Ctrl-C) and SIGTERM end the run the same way: listeners
        // closed, a temp directory removed. Without handlers either signal
        // would kill the process and leave the directory behind, so they are
        // installed before anything is created.
        let signal = signals();
        let signal = async {
            signal.await;
        };
        simulator::simulate_with(&scenario, options, signal)
            .await
            .map_err(|err| sim_listen_hint(err, "another process holds it"))
            .with_context(|| format!("simulating {}", scenario.display()))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `--speed N`: simulated seconds per real second, 1 to 10000.
fn parse_speed(parser: &mut lexopt::Parser) -> anyhow::Result<f64> {
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
    Ok(n)
}

/// `--clock-start SIM[@REAL]`: Unix seconds; REAL defaults to SIM.
fn parse_clock_start(value: &str) -> anyhow::Result<(Timestamp, Timestamp)> {
    let bad = || {
        usage(format!(
            "--clock-start {value:?}: expected SIM@REAL in Unix seconds, as `simulate` prints it"
        ))
    };
    let secs = |s: &str| {
        s.parse::<f64>()
            .ok()
            .and_then(Timestamp::from_secs_f64)
            .ok_or_else(bad)
    };
    match value.split_once('@') {
        Some((sim, real)) => Ok((secs(sim)?, secs(real)?)),
        None => {
            let t = secs(value)?;
            Ok((t, t))
        }
    }
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
    let mut speed: Option<f64> = None;
    let mut clock_start: Option<(Timestamp, Timestamp)> = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("config") => config_path = Some(parser.value().map_err(usage)?.into()),
            Long("check-config") => check_only = true,
            Long("speed") => speed = Some(parse_speed(&mut parser)?),
            Long("clock-start") => {
                let value = parser.value().map_err(usage)?;
                clock_start = Some(parse_clock_start(&value.to_string_lossy())?);
            }
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
    let hint = format!("set `listen` in {} to a free address", path.display());
    runtime()?.block_on(async {
        let options = daemon::Options {
            config,
            clock: serve_clock(speed, clock_start),
            listener: None,
            events: None,
        };
        ignore_signals();
        daemon::run(options, shutdown_signal())
            .await
            .map_err(|err| listen_hint(err, &hint))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The real clock, or the clock of a simulation: `speed` simulated seconds
/// per real second, at simulated time `sim` when the real time was `real`.
fn serve_clock(speed: Option<f64>, start: Option<(Timestamp, Timestamp)>) -> Clock {
    if speed.is_none() && start.is_none() {
        return Clock::real();
    }
    let speed = speed.unwrap_or(1.0);
    let real_now = Clock::real().now();
    let now = match start {
        Some((sim, real)) => {
            sim + Duration::from_secs_f64(real_now.since(real).as_secs_f64() * speed)
        }
        None => real_now,
    };
    Clock::accelerated(now, speed)
}

/// SIGHUP, SIGUSR1 and SIGUSR2 would end the process without draining (their
/// default action): they are logged and ignored instead. The configuration
/// is read once at start; a restart applies a changed one.
fn ignore_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, name, what) in [
        (
            SignalKind::hangup(),
            "SIGHUP",
            "ignored: the configuration is read at start; restart the daemon to apply a change",
        ),
        (SignalKind::user_defined1(), "SIGUSR1", "ignored"),
        (SignalKind::user_defined2(), "SIGUSR2", "ignored"),
    ] {
        match signal(kind) {
            Ok(mut stream) => {
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        tracing::warn!(signal = name, "signal received: {what}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(signal = name, error = %e, "cannot handle this signal; it keeps its default action")
            }
        }
    }
}

/// Resolves on the first SIGTERM, SIGINT or SIGQUIT; a second one exits at
/// once. The handlers are installed by this call, before the daemon starts,
/// so a signal that comes early still drains.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // SIGTERM: Kubernetes sends it to start a graceful shutdown. SIGINT: Ctrl-C.
    // SIGQUIT (Ctrl-\) drains too, rather than dying mid-write.
    let first = signals();
    async move {
        let first = first.await;
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
}

async fn wait_for_signal() -> &'static str {
    signals().await
}

/// Installs the SIGTERM and SIGINT handlers now (inside the runtime) and
/// resolves on the first of them.
fn signals() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int), Ok(mut quit)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = quit.recv() => "SIGQUIT",
            },
            _ => {
                // Without handlers the default action (exit) applies anyway.
                std::future::pending::<()>().await;
                "none"
            }
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
            Long("speed") => speed = Some(parse_speed(&mut parser)?),
            Long("for") => {
                let value = parser
                    .value()
                    .map_err(usage)?
                    .to_string_lossy()
                    .into_owned();
                let d = humantime::parse_duration(&value)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        usage(format!(
                            "--for {value:?}: expected a duration like 90s, 15m, 2h (simulated time)"
                        ))
                    })?;
                stop_after = Some(d);
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
    stop_after: Option<Duration>,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("cutover-auditor-demo-{}", std::process::id()));
    let result = demo_in(scenario, listen, stop_after, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `[+40m]`: simulated time since the demo started, to the second.
fn elapsed(at: Timestamp, start: Timestamp) -> String {
    let d = Duration::from_secs(at.since(start).as_secs());
    format!("[+{}]", humantime::format_duration(d))
}

/// What a scripted event does, in words for the demo's output.
fn describe_event(action: &Action, sim: &Simulation) -> String {
    let instance = |i: usize| match sim.instance_addresses().get(i) {
        Some(addr) => format!("apiserver instance {i} (https://{addr})"),
        None => format!("apiserver instance {i}"),
    };
    match action {
        Action::Restart { instance: i } => format!(
            "{} restarts: new process start time, its counters start again from 0",
            instance(*i)
        ),
        Action::DeleteMetrics { instance: i } => {
            format!(
                "DELETE /metrics on {}: its counters reset to 0",
                instance(*i)
            )
        }
        Action::AddInstance { version, .. } => {
            format!("a new apiserver instance joins (v{version})")
        }
        Action::RemoveInstance { instance: i } => format!("{} leaves", instance(*i)),
        Action::Outage { mode, duration, .. } => format!(
            "outage ({mode:?}) for {}",
            humantime::format_duration(*duration)
        ),
        Action::RotateToken => {
            "the scraper token is rotated (the old one stays valid for the grace period)".to_owned()
        }
    }
}

async fn demo_in(
    scenario: Scenario,
    listen: String,
    stop_after: Option<Duration>,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let start = Clock::real().now();
    let clock = Clock::accelerated(start, scenario.speed);
    let sim = Simulation::start(&scenario, clock.clone(), SimOptions::in_dir(dir))
        .await
        .map_err(|err| sim_listen_hint(err, "another process holds it"))
        .context("starting the simulated apiservers")?;
    let result = demo_with(&scenario, &sim, listen, stop_after, &clock, start, dir).await;
    sim.shutdown().await;
    result
}

async fn demo_with(
    scenario: &Scenario,
    sim: &Simulation,
    listen: String,
    stop_after: Option<Duration>,
    clock: &Clock,
    start: Timestamp,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
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
        humantime::format_duration(Duration::from_secs_f64(scenario.speed.round()))
    );
    println!("windows (shortened for the demo): {}", windows.join(", "));
    match stop_after {
        Some(d) => println!(
            "runs for {} of simulated time (--for; {} real), or until Ctrl-C",
            humantime::format_duration(d),
            humantime::format_duration(Duration::from_secs(clock.to_real(d).as_secs().max(1)))
        ),
        None => println!("runs until Ctrl-C (pass --for DURATION to stop by itself)"),
    }
    // The scripted events (restart, token rotation), printed as they happen.
    let mut events: Vec<_> = scenario.events.clone();
    events.sort_by_key(|e| e.at);
    let script = async {
        for event in &events {
            let at = start + event.at;
            clock.sleep(at.since(clock.now())).await;
            println!(
                "{} {}",
                elapsed(at, start),
                describe_event(&event.action, sim)
            );
        }
        std::future::pending::<()>().await;
    };
    let stop = async {
        match stop_after {
            Some(d) => {
                tokio::select! {
                    _ = clock.sleep(d) => println!(
                        "{} --for {} reached: stopping",
                        elapsed(start + d, start),
                        humantime::format_duration(d)
                    ),
                    _ = shutdown_signal() => println!("{} signal: stopping", elapsed(clock.now(), start)),
                }
            }
            None => {
                shutdown_signal().await;
                println!("{} signal: stopping", elapsed(clock.now(), start));
            }
        }
    };
    tokio::pin!(stop);
    tokio::pin!(script);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut script => {}
            event = rx.recv() => match event {
                Some(Event::Listening(addr)) => {
                    println!("status page: http://{addr}/");
                    println!("metrics:     http://{addr}/metrics");
                    println!("JSON status: http://{addr}/api/v1/status");
                }
                Some(Event::Transition { at, transition, assessment }) => {
                    let from = transition.from.map_or("(start)", |s| s.label());
                    let mut line = format!("{} {}: {from} -> {} ({}", elapsed(at, start), transition.cutover, transition.to, transition.reason);
                    if assessment.increase > 0 {
                        let plural = if assessment.increase == 1 { "" } else { "s" };
                        line.push_str(&format!(", {} use{plural} in the window", assessment.increase));
                    }
                    if let Some(d) = assessment.ready_in.filter(|d| !d.is_zero()) {
                        line.push_str(&format!(", ready in {} if quiet", humantime::format_duration(Duration::from_secs(d.as_secs()))));
                    }
                    if !assessment.blocking.is_empty() {
                        line.push_str(&format!(", {}", assessment.blocking.join(", ")));
                    }
                    if transition.regression {
                        line.push_str(", REGRESSION");
                    }
                    line.push(')');
                    println!("{line}");
                }
                Some(Event::Resumed(_)) => {}
                // The daemon ended by itself: its error is reported below.
                None => break,
            }
        }
    }
    let _ = stop_tx.send(());
    daemon.await.context("the daemon task")?.map_err(|err| {
        listen_hint(
            err,
            "pass --listen ADDR (e.g. --listen 127.0.0.1:0 for any free port)",
        )
    })?;
    Ok(())
}
