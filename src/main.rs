//! The `cutover-auditor` binary: a thin command-line shell over the library.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cutover_auditor::exposition::{ReadPageError, Watch, extract_from_reader};
use cutover_auditor::inspect::{self, Format};
use cutover_auditor::simulator;

const USAGE: &str = "\
Usage: cutover-auditor <COMMAND>

Commands:
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
        if cause.is::<Usage>() {
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
