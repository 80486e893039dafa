//! The properties the fuzz targets check, one function per target. Each
//! panics when a property fails. `tests/fuzz_regressions.rs` includes this
//! file too, so the plain test suite replays the corpus and every regression
//! through the same checks.

use std::io::Write;

use cutover_auditor::config::Config;
use cutover_auditor::exposition::{ExpositionError, Page, PageDecoder, Watch};
use cutover_auditor::simulator::Scenario;
use cutover_auditor::state;

/// The decoded-size limit of the extractor target: small, so a gzip bomb or a
/// long page hits it within a few microseconds.
pub const EXTRACT_LIMIT: u64 = 4 * 1024;

/// Arbitrary bytes through `PageDecoder`: never a panic, and the same result
/// for the whole body fed at once, in chunks derived from the input, and (for
/// short bodies) one byte at a time.
///
/// Byte 0: bit 0 set gzip-wraps the body first. Byte 1: seeds the chunk
/// sizes. The rest is the body.
pub fn extract(data: &[u8]) {
    let (flags, seed, raw) = match data {
        [flags, seed, rest @ ..] => (*flags, *seed, rest),
        _ => (0, 0, data),
    };
    let body = if flags & 1 == 1 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(raw).expect("gzip into memory");
        gz.finish().expect("gzip into memory")
    } else {
        raw.to_vec()
    };

    let whole = outcome(decode(&body, &[body.len()]));
    let sizes = chunk_sizes(seed, body.len());
    let chunked = outcome(decode(&body, &sizes));
    assert_eq!(
        whole, chunked,
        "one-shot and chunked ({sizes:?}) feeds disagree"
    );
    if body.len() <= 256 {
        let bytes = outcome(decode(&body, &vec![1; body.len()]));
        assert_eq!(whole, bytes, "one-shot and byte-by-byte feeds disagree");
    }
}

/// Arbitrary text through the config loader: no panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, |_| None);
    }
}

/// Arbitrary text through the simulator's scenario loader: no panic.
pub fn scenario(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Scenario::parse(text);
    }
}

/// Arbitrary bytes through the state-file decoder: no panic, and whatever it
/// accepts it can write back and read again.
pub fn state(data: &[u8]) {
    if let Ok(snapshot) = state::decode(data) {
        let written = serde_json::to_vec(&snapshot).expect("a decoded snapshot serialises");
        if let Err(reason) = state::decode(&written) {
            panic!("a decoded snapshot does not decode once written back: {reason}");
        }
    }
}

/// Feeds `body` in chunks of `sizes` (the last chunk takes what is left),
/// stopping at the first error as the scraper does.
fn decode(body: &[u8], sizes: &[usize]) -> Result<Page, ExpositionError> {
    let mut decoder = PageDecoder::with_limit(Watch::default_families(), EXTRACT_LIMIT);
    let mut rest = body;
    for &size in sizes {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        decoder.feed(chunk)?;
        rest = tail;
    }
    decoder.feed(rest)?;
    decoder.finish()
}

/// Chunk sizes from a small xorshift generator: mostly short chunks (lines
/// and gzip headers split anywhere), some empty, some long.
fn chunk_sizes(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut sizes = Vec::new();
    let mut total = 0;
    while total < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let size = match x % 8 {
            0 => 0,
            1..=5 => (x >> 8) as usize % 17 + 1,
            _ => (x >> 8) as usize % 4096 + 1,
        };
        sizes.push(size);
        total += size;
    }
    sizes
}

/// What a decode produced, comparable across feeds: the page, or the error.
/// A gzip error's I/O text depends on where the stream ended, so only its
/// kind counts.
fn outcome(result: Result<Page, ExpositionError>) -> String {
    match result {
        Ok(page) => format!("Ok({page:?})"),
        Err(ExpositionError::Gzip(_)) => "Err(Gzip)".to_owned(),
        Err(err) => format!("Err({err})"),
    }
}
