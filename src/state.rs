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

/// The format version written by this build.
pub const FORMAT_VERSION: u32 = 1;

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
    if version.version != FORMAT_VERSION {
        return Err(format!(
            "format version {} is not supported (this build reads {FORMAT_VERSION})",
            version.version
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("malformed state: {e}"))
}

/// The bytes of a snapshot, as [`decode`] reads them (the one encoder of
/// the file and the ConfigMap backends).
pub fn encode(snapshot: &Snapshot) -> Result<Vec<u8>, String> {
    serde_json::to_vec(snapshot).map_err(|e| format!("cannot encode the state: {e}"))
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
    let bytes = encode(snapshot).map_err(|e| err(io::Error::other(e)))?;
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
