//! What the benchmarks share: the generated pages (cached with their gzip
//! under `target/bench-pages/`), gzip in and out, and medians of timed runs.
//! Included by `benches/extract.rs` and `benches/soak.rs` through `#[path]`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::{GzDecoder, GzEncoder};

/// The chunk size pages are fed in, as a socket read would deliver them.
pub const CHUNK: usize = 64 * 1024;

/// The median of `n` timed runs after one untimed warm-up.
pub fn median(n: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Duration, String> {
    f()?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    Ok(median_of(times))
}

/// The median of some timings (zero for none).
pub fn median_of(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Counts bytes written, discarding them.
pub struct Discard(pub usize);

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes a gzip body in [`CHUNK`]s into nothing: the cost of decoding
/// alone. Returns the decoded size.
pub fn gzip_decode(zipped: &[u8]) -> Result<usize, String> {
    let mut dec = GzDecoder::new(Discard(0));
    for chunk in zipped.chunks(CHUNK) {
        dec.write_all(chunk).map_err(|e| e.to_string())?;
    }
    Ok(dec.finish().map_err(|e| e.to_string())?.0)
}

/// Gzips `bytes` in memory.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Cargo's target directory, where generated pages are cached.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Loads (generating and caching on first use) the page of `size` MB and its gzip.
pub fn load_page(dir: &Path, size: u32) -> Result<(Vec<u8>, Vec<u8>), String> {
    let txt = dir.join(format!("page-{size}mb-seed1.txt"));
    let gz = dir.join(format!("page-{size}mb-seed1.txt.gz"));
    if !txt.exists() {
        eprintln!("{size} MB: generating {}", txt.display());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/gen-apiserver-metrics.py");
        let out = Command::new("python3")
            .arg(&script)
            .args(["--size-mb", &size.to_string(), "--seed", "1"])
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "generator failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        write_atomically(&txt, &out.stdout)?;
        let _ = std::fs::remove_file(&gz);
    }
    let page = std::fs::read(&txt).map_err(|e| format!("{}: {e}", txt.display()))?;
    if !gz.exists() {
        eprintln!("{size} MB: compressing");
        write_atomically(&gz, &gzip(&page))?;
    }
    let zipped = std::fs::read(&gz).map_err(|e| format!("{}: {e}", gz.display()))?;
    Ok((page, zipped))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}
