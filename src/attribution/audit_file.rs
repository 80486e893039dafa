//! Follows a JSON-lines audit log (the apiserver's `--audit-log-path`):
//! reads complete lines as they are appended, follows rotation by rename
//! (the old file is read to its end, found again by inode after a restart),
//! notices truncation, and keeps its read position together with the
//! aggregates in one file written atomically, so a restart neither loses nor
//! double-counts an event.

// Shell (I/O allowed, see clippy.toml): reads the audit log, writes its position.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::audit::{AuditAggregate, MAX_EVENT_BYTES, Skip};

/// Why following failed; names the file.
#[derive(Debug, thiserror::Error)]
pub enum AuditFileError {
    /// The audit log could not be read.
    #[error("audit log {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The position file could not be written.
    #[error("audit position file {path}: {source}")]
    Save {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct Saved {
    inode: u64,
    offset: u64,
    aggregate: AuditAggregate,
}

/// A follower of one audit log.
pub struct AuditFollower {
    path: PathBuf,
    position_path: PathBuf,
    current: Option<(File, u64)>,
    offset: u64,
    /// Bytes read past `offset`: an incomplete line, kept in `partial` or,
    /// when too long, discarded.
    pending: u64,
    partial: Vec<u8>,
    discarding: bool,
    /// What was read so far (restored from the position file).
    pub aggregate: AuditAggregate,
}

impl AuditFollower {
    /// A follower of `path` that keeps its position in `position_path`,
    /// resuming from it when it holds one (a corrupt one starts afresh at the
    /// start of the current file). `capacity` bounds every aggregate.
    pub fn new(path: PathBuf, position_path: PathBuf, capacity: usize) -> AuditFollower {
        let saved: Option<Saved> = std::fs::read(&position_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut f = AuditFollower {
            path,
            position_path,
            current: None,
            offset: 0,
            pending: 0,
            partial: Vec::new(),
            discarding: false,
            aggregate: AuditAggregate::new(capacity),
        };
        if let Some(s) = saved {
            f.aggregate = s.aggregate;
            f.offset = s.offset;
            // The file read last: still at the path, or renamed beside it.
            f.current = f.find_inode(s.inode).map(|file| (file, s.inode));
            if f.current.is_none() {
                f.offset = 0;
            }
        }
        f
    }

    fn find_inode(&self, inode: u64) -> Option<File> {
        let at_path = std::fs::metadata(&self.path).ok();
        if at_path.is_some_and(|m| m.ino() == inode) {
            return File::open(&self.path).ok();
        }
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let m = e.metadata().ok()?;
            (m.is_file() && m.ino() == inode).then(|| File::open(e.path()).ok())?
        })
    }

    /// Reads what was appended; follows a rotation; saves the position when
    /// anything was read. Returns how many bytes were consumed.
    pub fn poll(&mut self) -> Result<u64, AuditFileError> {
        let path = self.path.clone();
        let read_err = |source| AuditFileError::Read {
            path: path.clone(),
            source,
        };
        let mut consumed = 0;
        if self.current.is_none() {
            match File::open(&self.path) {
                Ok(file) => {
                    let inode = file.metadata().map_err(read_err)?.ino();
                    self.current = Some((file, inode));
                    self.reset();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(read_err(e)),
            }
        }
        consumed += self.drain()?;
        let now_at_path = match std::fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(read_err(e)),
        };
        let inode = self.current.as_ref().map(|(_, i)| *i);
        match now_at_path {
            // Rotated by rename: the old file was read to its end above.
            Some(m) if Some(m.ino()) != inode => {
                let file = File::open(&self.path).map_err(read_err)?;
                self.current = Some((file, m.ino()));
                self.reset();
                consumed += self.drain()?;
            }
            // Truncated in place (copytruncate): start again at its start.
            Some(m) if m.len() < self.offset + self.pending => {
                self.reset();
                consumed += self.drain()?;
            }
            _ => {}
        }
        if consumed > 0 {
            self.save()?;
        }
        Ok(consumed)
    }

    /// Reads the current file from `offset` to its end, counting complete
    /// lines; `offset` moves to the end of the last complete line, and the
    /// bytes of an incomplete one (`pending`) are read again after a restart.
    fn drain(&mut self) -> Result<u64, AuditFileError> {
        let Some((file, _)) = self.current.as_mut() else {
            return Ok(0);
        };
        let path = self.path.clone();
        let err = |source| AuditFileError::Read {
            path: path.clone(),
            source,
        };
        file.seek(SeekFrom::Start(self.offset + self.pending))
            .map_err(err)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut consumed = 0;
        loop {
            let n = file.read(&mut buf).map_err(err)?;
            if n == 0 {
                return Ok(consumed);
            }
            let mut chunk = &buf[..n];
            while let Some(nl) = memchr::memchr(b'\n', chunk) {
                let line = &chunk[..nl];
                if !self.discarding {
                    if self.partial.is_empty() {
                        self.aggregate.add_line(line);
                    } else {
                        self.partial.extend_from_slice(line);
                        let whole = std::mem::take(&mut self.partial);
                        self.aggregate.add_line(&whole);
                    }
                }
                let advanced = self.pending + nl as u64 + 1;
                self.offset += advanced;
                consumed += advanced;
                self.pending = 0;
                self.partial.clear();
                self.discarding = false;
                chunk = &chunk[nl + 1..];
            }
            self.pending += chunk.len() as u64;
            if self.discarding {
                continue;
            }
            if self.partial.len() + chunk.len() > MAX_EVENT_BYTES {
                // A line longer than any event: counted once, skipped to its
                // end without being kept.
                *self.aggregate.skipped.entry(Skip::TooLarge).or_default() += 1;
                self.discarding = true;
                self.partial = Vec::new();
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
    }

    fn reset(&mut self) {
        self.offset = 0;
        self.pending = 0;
        self.partial.clear();
        self.discarding = false;
    }

    fn save(&self) -> Result<(), AuditFileError> {
        let Some((_, inode)) = &self.current else {
            return Ok(());
        };
        let err = |source| AuditFileError::Save {
            path: self.position_path.clone(),
            source,
        };
        let saved = Saved {
            inode: *inode,
            offset: self.offset,
            aggregate: self.aggregate.clone(),
        };
        let body = serde_json::to_vec(&saved).map_err(|e| err(io::Error::other(e)))?;
        let tmp = self.position_path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.position_path).map_err(err)
    }
}
