//! The state file: the ledger and verdict history, so a restart of the
//! daemon loses no evidence.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the
//! directory). A file that cannot be read or parsed is moved aside to
//! `<name>.corrupt-<unix seconds>` and the daemon starts from nothing, which
//! makes every verdict `blind`: a broken file never yields `ready`.

// Shell (I/O allowed, see clippy.toml): reads and writes the state file.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cutover::Cutover;
use crate::ledger::Ledger;
use crate::time::Timestamp;
use crate::verdict::Tracker;

/// The format version written by this build. Version 2 writes each series'
/// increments as a compact integer array (see `ledger`); version 1 files
/// (an object per increment) are still read.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// What is persisted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The format version.
    pub version: u32,
    /// When it was written.
    pub saved_at: Timestamp,
    /// The counter ledger.
    pub ledger: Ledger,
    /// Verdict history per cutover.
    pub trackers: BTreeMap<Cutover, Tracker>,
}

/// The outcome of reading the state file at start.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet: a first start.
    Missing,
    /// The saved state, to resume from.
    Resumed(Box<Snapshot>),
    /// The file was unusable and has been moved aside.
    Corrupt {
        /// Where it was moved.
        moved_to: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Writing failed.
    #[error("cannot write state file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The snapshot could not be encoded.
    #[error("cannot encode the state: {reason}")]
    Encode {
        /// Why.
        reason: String,
    },
    /// The path exists and is not a regular file.
    #[error(
        "state file {path} is {kind}, not a regular file: give a file path (its directory must be writable), or \"\" to disable persistence"
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The path cannot be examined.
    #[error("cannot use state file {path}")]
    Unusable {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A corrupt file could not even be moved aside.
    #[error("state file {path} is unusable ({reason}) and could not be moved aside")]
    MoveAside {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
        /// Why the move failed.
        source: io::Error,
    },
}

/// Checks that `path` can hold the state file: absent, or a regular file.
/// A directory, a device (`/dev/null`), a FIFO or a socket is refused: it is
/// never moved aside and replaced as if it were a corrupt state file.
pub fn check_path(path: &Path) -> Result<(), StateError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) => Err(StateError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(&meta.file_type()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Unusable {
            path: path.to_owned(),
            source,
        }),
    }
}

fn file_kind(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads the state file at `path`; an unusable file is moved aside, named
/// with `now` so that several corrupt files never overwrite each other.
/// A path that is not a regular file is an error, never moved aside.
pub fn load(path: &Path, now: Timestamp) -> Result<Loaded, StateError> {
    check_path(path)?;
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return move_aside(path, now, format!("unreadable: {e}")),
    };
    match decode(&bytes) {
        Ok(snapshot) => Ok(Loaded::Resumed(Box::new(snapshot))),
        Err(reason) => move_aside(path, now, reason),
    }
}

/// Parses a state file's bytes; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version: Version =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version.version) {
        return Err(format!(
            "format version {} is not supported (this build reads {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})",
            version.version
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("malformed state: {e}"))
}

/// The bytes of the state file for `snapshot` (what [`save`] writes and
/// [`decode`] reads).
pub fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(snapshot).map_err(|e| StateError::Encode {
        reason: e.to_string(),
    })
}

/// Writes the snapshot atomically: readers see the old file or the new one,
/// never a mix, even if the machine stops mid-write.
pub fn save(path: &Path, snapshot: &Snapshot) -> Result<(), StateError> {
    // Never rename over a directory or a device node put in its place.
    check_path(path)?;
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let bytes = encode(snapshot)?;
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        // Best effort: the temporary file is garbage either way.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn move_aside(path: &Path, now: Timestamp, reason: String) -> Result<Loaded, StateError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{}", now.as_millis().div_euclid(1000)));
    let mut moved_to = path.with_file_name(&name);
    let mut n = 1;
    while moved_to.exists() {
        let mut numbered = name.clone();
        numbered.push(format!(".{n}"));
        moved_to = path.with_file_name(numbered);
        n += 1;
    }
    match fs::rename(path, &moved_to) {
        Ok(()) => Ok(Loaded::Corrupt { moved_to, reason }),
        Err(source) => Err(StateError::MoveAside {
            path: path.to_owned(),
            reason,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ledger::{Observation, SeriesKey};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cutover-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn snapshot() -> Snapshot {
        let mut ledger = Ledger::default();
        for (t, v) in [(10, 1), (40, 3)] {
            ledger.observe(
                "10.0.0.1:6443",
                Timestamp::from_secs(t),
                Observation {
                    start_time: Some(Timestamp::from_secs(1)),
                    values: BTreeMap::from([(
                        SeriesKey::family("serviceaccount_legacy_tokens_total"),
                        v,
                    )]),
                },
            );
        }
        Snapshot {
            version: FORMAT_VERSION,
            saved_at: Timestamp::from_secs(41),
            ledger,
            trackers: BTreeMap::from([("legacy-tokens".into(), Tracker::default())]),
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let d = dir("roundtrip");
        let path = d.join("state.json");
        assert!(matches!(
            load(&path, Timestamp(0)).unwrap(),
            Loaded::Missing
        ));
        save(&path, &snapshot()).unwrap();
        save(&path, &snapshot()).unwrap();
        match load(&path, Timestamp(0)).unwrap() {
            Loaded::Resumed(s) => assert_eq!(*s, snapshot()),
            other => panic!("{other:?}"),
        }
        assert!(!temp_path(&path).exists());
    }

    /// A state file as format version 1 wrote it (one object per increment,
    /// the old retention), shaped like the files of the fuzz corpus.
    const VERSION_1_FILE: &str = r#"{"version":1,"saved_at":1796422029360,"ledger":{"observing_since":1796404386809,"instances":{"127.0.0.10:36053":{"exists_from":null,"covered_from":1796411133909,"last":{"at":1796412902352,"start_time":1796390590820,"values":{"serviceaccount_legacy_tokens_total":24,"serviceaccount_valid_tokens_total":2140}},"gone_at":null,"increments":{"serviceaccount_legacy_tokens_total":[{"during":{"from":1796409804380,"to":1796412840056},"amount":3}],"serviceaccount_valid_tokens_total":[{"during":{"from":1796409804380,"to":1796412840056},"amount":401},{"during":{"from":1796412840056,"to":1796412902352},"amount":714}]},"holes":[{"from":1796409000000,"to":1796409804380}],"totals":{"serviceaccount_legacy_tokens_total":24,"serviceaccount_valid_tokens_total":2140},"resets_total":1,"holes_total":1,"zero_at":null,"starts_seen":[1796388550820],"mixed_at":[]}},"listed":{"127.0.0.11:36053":{"since":1796404386809,"gone_at":null}},"retired_totals":{},"retention":{"horizon":{"secs":608400,"nanos":0},"exact_recent":{"secs":3600,"nanos":0},"max_increments":1024}},"trackers":{"legacy-tokens":{"current":["blind",1796404414599],"regressions":0,"last_regression":null,"ready_since_last_use":false}}}"#;

    #[test]
    fn version_1_files_still_load_and_are_written_back_compact() {
        let old = decode(VERSION_1_FILE.as_bytes()).unwrap();
        assert_eq!(old.version, 1);
        let a = old.ledger.instance("127.0.0.10:36053").unwrap();
        let valid = "serviceaccount_valid_tokens_total";
        let since = Timestamp(1_796_412_840_056);
        assert_eq!(a.increase(valid, Timestamp(0)), 401 + 714);
        assert_eq!(a.increase(valid, since), 714);
        assert_eq!(a.increase_inside(valid, since), 714);
        assert_eq!(a.last_increase(valid), Some(Timestamp(1_796_412_902_352)));
        assert_eq!(
            a.increase("serviceaccount_legacy_tokens_total", Timestamp(0)),
            3
        );
        assert_eq!(a.family_total(valid), 2140);
        assert_eq!(a.holes_total(), 1);
        let again = Snapshot {
            version: FORMAT_VERSION,
            ..old.clone()
        };
        let bytes = encode(&again).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(
                r#""serviceaccount_valid_tokens_total":[1796409804380,3035676,401,0,62296,714]"#
            ),
            "{text}"
        );
        assert!(!text.contains("during"), "{text}");
        assert!(bytes.len() < VERSION_1_FILE.len(), "{} bytes", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), again);
    }

    #[test]
    fn malformed_compact_series_are_refused_with_the_reason() {
        let with_series = |series: &str| {
            VERSION_1_FILE.replace(
                r#"[{"during":{"from":1796409804380,"to":1796412840056},"amount":3}]"#,
                series,
            )
        };
        for (series, reason) in [
            ("[1,2]", "not a multiple of 3"),
            ("[1,2,-3]", "not a non-negative integer"),
            ("[1,2,3,4]", "not a multiple of 3"),
            (
                r#"[1,2,3,{"during":{"from":1,"to":2},"amount":3}]"#,
                "an increment object among",
            ),
            (
                r#"[{"during":{"from":1,"to":2},"amount":3},1,2,3]"#,
                "an integer among",
            ),
            ("[18446744073709551615,2,3]", "not a 64-bit signed integer"),
        ] {
            let err = decode(with_series(series).as_bytes()).unwrap_err();
            assert!(
                err.starts_with("malformed state") && err.contains(reason),
                "{series}: {err}"
            );
        }
        // A series of decreasing times is taken as written (wrapping deltas).
        let ok = decode(with_series("[10,5,1,-20,3,2]").as_bytes()).unwrap();
        let a = ok.ledger.instance("127.0.0.10:36053").unwrap();
        assert_eq!(
            a.increase("serviceaccount_legacy_tokens_total", Timestamp(0)),
            1
        );
        assert_eq!(
            a.increase("serviceaccount_legacy_tokens_total", Timestamp(-100)),
            3
        );
    }

    #[test]
    fn corrupt_files_are_moved_aside_with_the_reason() {
        let d = dir("corrupt");
        let path = d.join("state.json");
        let check = |content: &[u8], reason: &str| {
            fs::write(&path, content).unwrap();
            match load(&path, Timestamp::from_secs(1_700_000_000)).unwrap() {
                Loaded::Corrupt {
                    moved_to,
                    reason: got,
                } => {
                    assert!(got.contains(reason), "{got}");
                    assert!(
                        moved_to
                            .to_string_lossy()
                            .contains("state.json.corrupt-1700000000")
                    );
                    assert_eq!(fs::read(&moved_to).unwrap(), content, "kept for inspection");
                }
                other => panic!("{other:?}"),
            }
            assert!(!path.exists());
        };
        check(b"{\"version\": 1, \"ledger\": 7", "not a state file");
        check(b"\x00\x01garbage", "not a state file");
        check(b"{\"version\": 99}", "format version 99 is not supported");
        check(b"{\"version\": 1, \"saved_at\": 5}", "malformed state");
        // Four corrupt files in the same second: none overwritten.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 4);
    }
}
