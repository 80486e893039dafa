//! Replays the committed fuzz corpus and every input a fuzzer ever failed on
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the same
//! checks as the fuzz targets (`fuzz/src/lib.rs`), so the plain test suite
//! keeps them covered without a nightly toolchain.

use std::fs;
use std::path::Path;

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod checks;

/// Runs `check` on every file under `fuzz/<kind>/<target>`; returns how many.
fn replay(kind: &str, target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("listing a fuzz input").path();
        let data = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails its check",
            path.display()
        );
        count += 1;
    }
    count
}

fn replay_target(target: &str, check: fn(&[u8])) {
    let corpus = replay("corpus", target, check);
    assert!(corpus > 0, "fuzz/corpus/{target} holds no input");
    replay("regressions", target, check);
}

#[test]
fn extract_corpus_and_regressions_give_one_result_for_every_chunking() {
    replay_target("extract", checks::extract);
}

#[test]
fn config_corpus_and_regressions_parse_without_panic() {
    replay_target("config", checks::config);
}

#[test]
fn state_corpus_and_regressions_decode_without_panic() {
    replay_target("state", checks::state);
}

#[test]
fn scenario_corpus_and_regressions_parse_without_panic() {
    replay_target("scenario", checks::scenario);
}

/// Found by the `extract` target: a page over the size limit whose first line
/// is malformed said "too large" when read at once and "malformed" when read
/// in chunks. The bytes within the limit are now read first, so both say
/// "malformed".
#[test]
fn a_malformed_line_before_the_size_limit_wins_however_the_body_is_chunked() {
    use cutover_auditor::exposition::{ExpositionError, PageDecoder, Watch};
    let mut body = b"serviceaccount_legacy_tokens_total oops\n".to_vec();
    body.extend(std::iter::repeat_n(b'#', 10_000));
    for chunk in [body.len(), 4096, 7, 1] {
        let mut decoder = PageDecoder::with_limit(Watch::default_families(), 1024);
        let result = body
            .chunks(chunk)
            .try_for_each(|c| decoder.feed(c))
            .and_then(|()| decoder.finish().map(drop));
        assert!(
            matches!(result, Err(ExpositionError::Malformed { line: 1, .. })),
            "chunks of {chunk}: {result:?}"
        );
    }
}
