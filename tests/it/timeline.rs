//! The status page's timelines seen in a real browser: `demo` on loopback,
//! its page fetched and its SVG structure checked, and headless Chromium
//! screenshots taken while the legacy client is in use, after the apiserver
//! restart, and once ready. The positions of marks and holes for known uses
//! are checked on a manual clock in `src/status_page.rs` and
//! `src/timeline.rs`; here the demo's ground truth is coarser (three
//! instances, uses while in use, a restart hole on instance 1).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::process::{Guard, bin};
use crate::support::tempdir::TempDir;

/// The page body from `GET /` on `addr` (HTTP/1.1, connection closed).
fn get_page(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the demo");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .expect("a body")
}

/// The values of `attr` on each start tag beginning with `open`.
fn attrs(page: &str, open: &str, attr: &str) -> Vec<String> {
    page.match_indices(open)
        .map(|(i, _)| {
            let tag = &page[i..i + page[i..].find('>').expect("closed tag")];
            let key = format!(" {attr}=\"");
            let from = tag.find(&key).expect("attribute") + key.len();
            tag[from..from + tag[from..].find('"').expect("quoted")].to_owned()
        })
        .collect()
}

/// The timeline SVGs of the page: one per cutover, each with a lane per
/// demo instance; returns the SVG texts.
fn check_structure(page: &str) -> Vec<String> {
    let svgs: Vec<String> = page
        .match_indices("<svg class=\"tl\"")
        .map(|(i, _)| page[i..i + page[i..].find("</svg>").expect("closed svg")].to_owned())
        .collect();
    assert_eq!(svgs.len(), 3, "one timeline per demo cutover\n{page}");
    for svg in &svgs {
        let lanes = attrs(svg, "<g class=\"lane\"", "data-instance");
        assert_eq!(lanes.len(), 3, "a lane per instance: {lanes:?}");
        assert!(lanes.iter().all(|l| l.starts_with("127.0.0.")), "{lanes:?}");
        for marker in ["window start</text>", "now</text>", "UTC (+00:00)"] {
            assert!(svg.contains(marker), "missing {marker}");
        }
        // Every mark and hole says what it is.
        for open in ["<rect class=\"use ", "<rect class=\"hole "] {
            for (i, _) in svg.match_indices(open) {
                let element = &svg[i..i + svg[i..].find("</rect>").expect("closed rect")];
                assert!(element.contains("<title>"), "{element}");
            }
        }
    }
    assert_eq!(page.matches("<details>").count(), 3, "a table per timeline");
    svgs
}

/// A headless Chromium screenshot of `url`, bounded in time; checks the
/// PNG and returns its size in bytes.
fn screenshot(url: &str, file: &Path, profile: &Path) -> usize {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("chromium is installed (tests/run-all.sh installs it)");
    let mut child = Guard(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1200,2000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", file.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "chromium took over 90 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium: {status}");
    let png = std::fs::read(file).expect("the screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 2000));
    // A blank page compresses to a few KiB; the page with cards, three
    // timelines and a table does not.
    assert!(png.len() > 40 * 1024, "{} bytes: a blank page?", png.len());
    png.len()
}

#[test]
fn demo_timelines_render_in_chromium_in_use_after_the_restart_and_ready() {
    let dir = TempDir::new();
    let mut child = Guard(
        bin()
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--speed",
                "120",
                "--for",
                "70m",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start demo"),
    );
    let stdout = child.0.stdout.take().expect("stdout piped");
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    // Reads the demo's output (bounded) until a line satisfies `wanted`.
    let mut wait = |what: &str, wanted: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("demo printed no {what} ({e:?}):\n{}", seen.join("\n")),
            }
        }
    };
    let line = wait("status page", &|l| l.starts_with("status page: http://"));
    let url = line.trim_start_matches("status page: ").trim().to_owned();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("an address");
    let shot = |name: &str| -> (PathBuf, usize) {
        let file = dir.0.join(format!("{name}.png"));
        let size = screenshot(&url, &file, &dir.0.join(format!("profile-{name}")));
        (file, size)
    };

    // In use: the legacy client's uses are marks on the lanes.
    wait("in use", &|l| l.contains("legacy-tokens: blind -> in_use"));
    let page = get_page(addr);
    let svgs = check_structure(&page);
    assert!(
        svgs[0].contains("<rect class=\"use q\"")
            || svgs[0].contains("<path class=\"use q dense\""),
        "uses drawn while in use\n{}",
        svgs[0]
    );
    shot("in-use");

    // After the restart: instance 1's lane shows the restart hole once the
    // new process has been scraped.
    wait("the restart", &|l| {
        l.contains("restarts: new process start time")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = get_page(addr);
        if page.contains("class=\"hole g-restart\"") {
            break page;
        }
        assert!(Instant::now() < deadline, "no restart hole drawn\n{page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    check_structure(&page);
    let holes = attrs(&page, "<rect class=\"hole g-restart\"", "fill");
    assert!(
        holes.iter().all(|f| f.starts_with("url(#hatch")),
        "holes are patterned: {holes:?}"
    );
    shot("after-restart");

    // Ready: the ready marker sits at now.
    wait("ready", &|l| {
        l.contains("legacy-tokens: ") && l.contains("-> ready")
    });
    let page = get_page(addr);
    let svgs = check_structure(&page);
    assert!(svgs[0].contains(">ready now</text>"), "{}", svgs[0]);
    let (file, _) = shot("ready");
    if let Some(keep) = std::env::var_os("TIMELINE_SCREENSHOT") {
        std::fs::copy(&file, keep).expect("copy the screenshot");
    }
}
