//! Child processes under test: the built binary, `serve` on a port it picks,
//! and a guard that kills a child when the test ends, passed or not.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The built `cutover-auditor` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cutover-auditor"))
}

/// Kills the child when the test ends, passed or not.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free at the time of the call, for a child that takes
/// its port on the command line and cannot report one it picked (Prometheus,
/// Alertmanager): another process may take it first, which the child's
/// readiness wait then reports.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `cutover-auditor serve` on a configuration whose `listen` is
/// `127.0.0.1:0` and whose log level is `info`: the address it bound is
/// read from its log, so no port is guessed.
pub struct Serve {
    pub child: Guard,
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    logs: Vec<String>,
}

impl Serve {
    /// Starts `serve --config config` and waits (bounded) until it listens.
    pub fn start(config: &Path) -> Serve {
        let mut command = bin();
        command.args(["serve", "--config"]).arg(config);
        Serve::spawn(command)
    }

    /// Runs `command` (a `serve` command line) and waits (bounded) until it
    /// listens.
    pub fn spawn(mut command: Command) -> Serve {
        let mut child = Guard(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start serve"),
        );
        let stderr = child.0.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
            logs: Vec::new(),
        };
        let line = serve.wait_log("the listening address", |l| listen_addr(l).is_some());
        serve.addr = listen_addr(&line).expect("address in the line");
        serve
    }

    /// `http://addr`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Reads log lines (bounded: 30 s) until one satisfies `wanted`; returns it.
    #[track_caller]
    pub fn wait_log(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.logs.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "serve logged no {what} ({e:?}); its log:\n{}",
                    self.logs.join("\n")
                ),
            }
        }
    }

    /// Waits (bounded) for the process to exit; returns its status.
    #[track_caller]
    pub fn exit_within(&mut self, bound: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(started.elapsed() < bound, "no exit within {bound:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log line, once the process has closed its stderr.
    pub fn logs(mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.logs.push(line);
        }
        self.logs
    }
}

/// The address in the daemon's "serving ..." log line, text or JSON.
fn listen_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("serving /metrics") {
        return None;
    }
    let rest = line
        .split_once("\"addr\":\"")
        .or_else(|| line.split_once("addr="))?
        .1;
    let end = rest
        .find(|c: char| c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
