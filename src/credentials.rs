//! Bearer tokens read from a file, re-read as the kubelet rotates them.
//!
//! A projected ServiceAccount token lives about an hour and the kubelet
//! replaces the file long before it expires. client-go re-reads the file
//! every minute; an auditor that read it once would itself become a
//! stale-token client and inflate `serviceaccount_stale_tokens_total`, the
//! very counter it audits. [`TokenFile`] re-reads the file when its identity
//! (size, modification time, inode) changes and at least every
//! [`REREAD_PERIOD`], and keeps the token out of every `Debug`, `Display` and
//! error text. [`read_ca_bundle`] reads the CA bundle that alone is trusted.
//!
//! Text a server sent (an error body, an echoed header) goes through
//! [`Secret::redact`] before anything shortens it: only a [`Redacted`] text
//! can be shortened, so a cut can never leave part of a token behind.

// Shell (I/O allowed, see clippy.toml): reads the token and CA files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The longest a token is used without reading the file again (client-go's
/// `NewCachedFileTokenSource` period).
pub const REREAD_PERIOD: Duration = Duration::from_secs(60);

/// The shortest token accepted: a token of 1 to 3 bytes cannot be told
/// apart from ordinary text when it is echoed back (redacting every `a` would
/// mangle errors, not redacting it would print it), and is no secret anyway.
pub const MIN_TOKEN_BYTES: usize = 4;

/// The shortest fragment of a token that [`Secret::redact`] removes wherever
/// it stands; see there.
pub const REDACTED_FRAGMENT_BYTES: usize = 8;

/// What replaces a token (or a fragment of one) in text.
pub const REDACTED: &str = "<redacted>";

/// A credential that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The credential itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` without the credential, ready to be shortened.
    ///
    /// The rule: for a credential of at least [`REDACTED_FRAGMENT_BYTES`]
    /// (8) bytes, every stretch of `text` covered by 8-byte pieces of it is
    /// replaced by `<redacted>`, so no substring of 8 bytes or more survives,
    /// whether the credential appears whole, cut short by an earlier
    /// truncation, or split by escapes. A credential of 4 to 7 bytes is
    /// replaced wherever it appears whole (shorter pieces of it cannot be
    /// told from ordinary text). Both apply to the credential as sent and as
    /// Rust's `{:?}` shows it (`"` and `\` escaped), since error messages
    /// quote text that way. Shorter credentials are refused when read
    /// ([`MIN_TOKEN_BYTES`]).
    pub fn redact(&self, text: &str) -> Redacted {
        let escaped: String = self.0.escape_debug().collect();
        let mut covered = vec![false; text.len()];
        for form in [self.0.as_str(), escaped.as_str()] {
            cover(text.as_bytes(), form.as_bytes(), &mut covered);
            if escaped == self.0 {
                break;
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            if !covered[i] {
                let end = covered[i..]
                    .iter()
                    .position(|&c| c)
                    .map_or(text.len(), |n| i + n);
                // A covered stretch always ends on a character boundary
                // (see `cover`), so this one starts on one.
                out.push_str(&text[i..end]);
                i = end;
            } else {
                while i < text.len() && covered[i] {
                    i += 1;
                }
                out.push_str(REDACTED);
            }
        }
        Redacted(out)
    }
}

/// Text from which a credential was removed: the only text that may be
/// shortened for an error, a log line or a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// At most `max_chars` characters (and `…` when cut).
    pub fn shorten(self, max_chars: usize) -> String {
        match self.0.char_indices().nth(max_chars) {
            None => self.0,
            Some((at, _)) => format!("{}…", &self.0[..at]),
        }
    }

    /// The whole text.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Marks the bytes of `text` that belong to an occurrence of `secret` (when
/// shorter than [`REDACTED_FRAGMENT_BYTES`]) or to a window of that many
/// bytes found in `secret`; stretches are widened to character boundaries.
fn cover(text: &[u8], secret: &[u8], covered: &mut [bool]) {
    if secret.is_empty() {
        return;
    }
    let mut mark = |start: usize, len: usize| {
        let (mut start, mut end) = (start, start + len);
        while start > 0 && (text[start] & 0xC0) == 0x80 {
            start -= 1;
        }
        while end < text.len() && (text[end] & 0xC0) == 0x80 {
            end += 1;
        }
        covered[start..end].iter_mut().for_each(|c| *c = true);
    };
    if secret.len() < REDACTED_FRAGMENT_BYTES {
        for at in memchr::memmem::find_iter(text, secret) {
            mark(at, secret.len());
        }
        return;
    }
    let window = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
    let pieces: HashSet<u64, BuildHasherDefault<WindowHasher>> = secret
        .windows(REDACTED_FRAGMENT_BYTES)
        .map(window)
        .collect();
    for (at, w) in text.windows(REDACTED_FRAGMENT_BYTES).enumerate() {
        if pieces.contains(&window(w)) {
            mark(at, REDACTED_FRAGMENT_BYTES);
        }
    }
}

/// A multiply-shift hash for 8-byte windows: SipHash would dominate the
/// scan, and the keys are not chosen by whoever fills the table.
#[derive(Default)]
struct WindowHasher(u64);

impl Hasher for WindowHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why no token could be had. Every variant names the file, none carries
/// the token.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The token file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The file holds only whitespace.
    #[error("token file {path} is empty")]
    Empty {
        /// The token file.
        path: String,
    },
    /// The token is shorter than [`MIN_TOKEN_BYTES`]: too short to be kept
    /// out of echoed text.
    #[error("token file {path} holds a token of {len} bytes; at least {min} are needed")]
    TooShort {
        /// The token file.
        path: String,
        /// The token's length.
        len: usize,
        /// [`MIN_TOKEN_BYTES`].
        min: usize,
    },
    /// The token has bytes an HTTP header cannot carry (binary junk, a
    /// newline inside it), so it cannot be a bearer token.
    #[error("token file {path} holds characters that cannot be sent in an HTTP header")]
    Invalid {
        /// The token file.
        path: String,
    },
}

/// Why a CA bundle cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read CA file {path}: {source}")]
    Read {
        /// The CA file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The PEM framing is broken (a section without its end, bad base64).
    #[error("CA file {path} is not a PEM bundle: {detail}")]
    Pem {
        /// The CA file.
        path: String,
        /// What the PEM parser said.
        detail: String,
    },
    /// No `CERTIFICATE` section at all.
    #[error("CA file {path} holds no PEM certificate")]
    Empty {
        /// The CA file.
        path: String,
    },
    /// A `CERTIFICATE` section whose content is not an X.509 certificate
    /// usable as a trust anchor.
    #[error("CA file {path}: certificate {index} does not parse: {detail}")]
    Certificate {
        /// The CA file.
        path: String,
        /// Its position in the file, from 1.
        index: usize,
        /// What the parser said.
        detail: String,
    },
}

/// Reads a PEM CA bundle and checks that every certificate in it parses as
/// a trust anchor: what the scraper, discovery and `--check-config` all
/// trust, read the same way.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let name = || path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| CaError::Read {
        path: name(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Pem {
            path: name(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CaError::Empty { path: name() });
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| CaError::Certificate {
            path: name(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// A token file, shared by every scraper and discovery (`Arc<TokenFile>`).
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    period: Duration,
    cache: Mutex<Option<Cached>>,
}

impl TokenFile {
    /// A token file re-read at least every [`REREAD_PERIOD`]. Nothing is
    /// read until the first [`TokenFile::token`].
    pub fn new(path: PathBuf) -> TokenFile {
        TokenFile::with_period(path, REREAD_PERIOD)
    }

    /// A token file re-read at least every `period` (tests shorten it).
    pub fn with_period(path: PathBuf, period: Duration) -> TokenFile {
        TokenFile {
            path,
            period,
            cache: Mutex::new(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current token: the cached one while the file looks unchanged and
    /// is younger than the period, else the file's content, trimmed.
    ///
    /// When a re-read fails after an earlier success, the last good token is
    /// kept (as client-go does): a kubelet mid-swap or a transient error must
    /// not stop scraping while the old token is still accepted. The error
    /// shows up once the token itself is rejected.
    pub fn token(&self) -> Result<Secret, CredentialError> {
        self.get(false)
    }

    /// Reads the file now, whatever the cache says: after a 401 the token
    /// may have been rotated since the last look.
    pub fn reload(&self) -> Result<Secret, CredentialError> {
        self.get(true)
    }

    fn get(&self, force: bool) -> Result<Secret, CredentialError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // One `stat` per call: a syscall on a tiny local file, cheap enough to
        // run on the async runtime without a blocking-pool hop.
        let stamp = std::fs::metadata(&self.path).ok().map(|m| Stamp::of(&m));
        let now = Instant::now();
        if !force
            && let Some(cached) = cache.as_ref()
            && !needs_reread(
                cached.stamp.as_ref(),
                cached.read_at,
                stamp.as_ref(),
                now,
                self.period,
            )
        {
            return Ok(cached.token.clone());
        }
        match self.read() {
            Ok(token) => {
                *cache = Some(Cached {
                    token: token.clone(),
                    stamp,
                    read_at: now,
                });
                Ok(token)
            }
            Err(err) => match cache.as_mut() {
                Some(cached) if !force => {
                    // Try again when the file changes or a period from now,
                    // not on every call.
                    cached.stamp = stamp;
                    cached.read_at = now;
                    Ok(cached.token.clone())
                }
                _ => Err(err),
            },
        }
    }

    fn read(&self) -> Result<Secret, CredentialError> {
        let path = || self.path.display().to_string();
        let bytes = std::fs::read(&self.path).map_err(|source| CredentialError::Read {
            path: path(),
            source,
        })?;
        let text =
            String::from_utf8(bytes).map_err(|_| CredentialError::Invalid { path: path() })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(CredentialError::Empty { path: path() });
        }
        // Visible ASCII only: anything else would fail (or be mangled) as a
        // header value, with an error that might echo the bytes.
        if !token.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(CredentialError::Invalid { path: path() });
        }
        if token.len() < MIN_TOKEN_BYTES {
            return Err(CredentialError::TooShort {
                path: path(),
                len: token.len(),
                min: MIN_TOKEN_BYTES,
            });
        }
        Ok(Secret::new(token))
    }
}

/// Whether a cached token must be read again: the file changed identity
/// (or vanished, or appeared), or the last read is `period` old.
pub fn needs_reread(
    cached: Option<&Stamp>,
    read_at: Instant,
    current: Option<&Stamp>,
    now: Instant,
    period: Duration,
) -> bool {
    cached != current || now.saturating_duration_since(read_at) >= period
}

/// What identifies one version of the token file without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, when the platform has one.
    pub modified: Option<SystemTime>,
    /// Inode number: kubelet swaps a symlink to a new file, so a rotation
    /// always shows as a new inode even within one mtime tick.
    pub inode: u64,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    stamp: Option<Stamp>,
    read_at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    /// A token of `len` bytes from the characters of a JWT, different for
    /// every length.
    pub(crate) fn token_of(len: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        let mut x = (len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                CHARS[(x % CHARS.len() as u64) as usize] as char
            })
            .collect()
    }

    /// The rule of [`Secret::redact`], checked without it: every
    /// character of the token's alphabet in these texts comes from the token
    /// (the words around are shorter than 8), so a long token left no piece
    /// of 8 bytes or more when no run of 8 such characters is left; a short
    /// token must not be left whole.
    fn assert_clean(text: &str, token: &str, context: &str) {
        if token.len() >= REDACTED_FRAGMENT_BYTES {
            let text = text.replace("<redacted", "~");
            let run = text
                .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                .find(|run| run.len() >= REDACTED_FRAGMENT_BYTES);
            assert!(run.is_none(), "{context}: {run:?} left in {text:?}");
        } else {
            assert!(!text.contains(token), "{context}: token left in {text:?}");
        }
    }

    /// Filler that shares no character with any token.
    fn filler(n: usize) -> String {
        "~ #".chars().cycle().take(n).collect()
    }

    #[test]
    fn redacting_then_shortening_leaves_no_piece_of_any_token() {
        for len in MIN_TOKEN_BYTES..=2000 {
            let token = token_of(len);
            let secret = Secret::new(token.as_str());
            // Whole, cut through at every position by the shortening: the
            // token starts `before` characters ahead of the 300th.
            // Every cut for short tokens; around both ends and the middle for
            // long ones (the debug build is slow).
            let cuts: Vec<usize> = if len <= 64 {
                (0..=len).collect()
            } else {
                vec![0, 1, 7, 8, 9, len / 2, len - 9, len - 8, len - 1, len]
            };
            let shortened = if len <= 64 {
                cuts.clone()
            } else {
                vec![1, len / 2, len - 1]
            };
            for &before in &shortened {
                let text = format!("{}Bearer {token} tail", filler(300 - before.min(300)));
                let shown = secret.redact(&text).shorten(300);
                assert_clean(&shown, &token, &format!("len {len}, cut {before}"));
                assert!(shown.chars().count() <= 301, "len {len}: {shown:?}");
            }
            // Already cut by someone else (a prefix, a suffix, a middle),
            // escaped, or repeated back to back: every piece of 8 bytes or
            // more goes, and the text around it stays.
            let mut text = String::new();
            for &c in &cuts {
                text.push_str(&format!("{}{}|", &token[..c], filler(3)));
                text.push_str(&format!("{}{}|", &token[c..], filler(3)));
                if c <= len / 2 {
                    text.push_str(&format!("{}{}|", &token[c..len - c], filler(3)));
                }
            }
            text.push_str(&format!("{token}{token}{token}"));
            let redacted = secret.redact(&text).into_string();
            assert_clean(&redacted, &token, &format!("len {len}, pieces"));
            if len >= REDACTED_FRAGMENT_BYTES {
                assert_eq!(
                    redacted.matches("~ #|").count(),
                    text.matches("~ #|").count(),
                    "len {len}: text around the pieces is kept"
                );
            }
        }
    }

    #[test]
    fn short_tokens_are_redacted_whole_and_refused_below_four_bytes() {
        // 4 to 7 bytes: whole occurrences only; the words around stay.
        let s = Secret::new("abcd");
        assert_eq!(
            s.redact("abc abcd abcde xabcdx").into_string(),
            "abc <redacted> <redacted>e x<redacted>x"
        );
        assert_eq!(s.redact("a b c d").into_string(), "a b c d");
        // 8 bytes and more: any piece of 8.
        let s = Secret::new("0123456789abcdef");
        assert_eq!(
            s.redact("x 01234567 y 9abcdef z 2345678 w").into_string(),
            "x <redacted> y 9abcdef z 2345678 w"
        );
        // As `{:?}` shows a token with a quote or a backslash.
        let s = Secret::new(r#"ab"cd\efgh"#);
        let quoted = format!("Content-Type {:?}", s.expose());
        assert_eq!(
            s.redact(&quoted).into_string(),
            "Content-Type \"<redacted>\""
        );
        // Non-ASCII text around a match stays whole.
        let s = Secret::new("tokentoken");
        assert_eq!(s.redact("é tokentoken ü").into_string(), "é <redacted> ü");
        // Shortening counts characters and marks the cut.
        assert_eq!(Secret::new("zzzz").redact("héllo").shorten(2), "hé…");
        assert_eq!(Secret::new("zzzz").redact("héllo").shorten(5), "héllo");

        let dir = Dir::new("short");
        let path = dir.0.join("token");
        for len in 1..MIN_TOKEN_BYTES {
            std::fs::write(&path, token_of(len)).expect("write");
            let err = TokenFile::new(path.clone()).token().expect_err("refused");
            assert!(matches!(err, CredentialError::TooShort { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("at least 4"), "{text}");
        }
        std::fs::write(&path, token_of(MIN_TOKEN_BYTES)).expect("write");
        assert!(TokenFile::new(path.clone()).token().is_ok());
    }

    #[test]
    fn reread_decision() {
        let t0 = Instant::now();
        let a = Stamp {
            len: 10,
            modified: Some(SystemTime::UNIX_EPOCH),
            inode: 7,
        };
        let check = |cached: Option<&Stamp>, current: Option<&Stamp>, after: u64, want: bool| {
            let now = t0 + Duration::from_secs(after);
            assert_eq!(
                needs_reread(cached, t0, current, now, REREAD_PERIOD),
                want,
                "{cached:?} -> {current:?} after {after}s"
            );
        };
        check(Some(&a), Some(&a), 0, false);
        check(Some(&a), Some(&a), 59, false);
        check(Some(&a), Some(&a), 60, true);
        check(
            Some(&a),
            Some(&Stamp {
                len: 11,
                ..a.clone()
            }),
            1,
            true,
        );
        check(
            Some(&a),
            Some(&Stamp {
                inode: 8,
                ..a.clone()
            }),
            1,
            true,
        );
        let later = Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1));
        check(
            Some(&a),
            Some(&Stamp {
                modified: later,
                ..a.clone()
            }),
            1,
            true,
        );
        check(Some(&a), None, 1, true);
        check(None, Some(&a), 1, true);
        check(None, None, 1, false);
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir()
                .join(format!("cutover-credentials-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Rewrites a file in place (same inode) and puts its mtime back, so
    /// only the content changed: the cache cannot see it without a read.
    fn overwrite_unseen(path: &Path, content: &str) {
        let before = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .expect("mtime");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("open");
        std::io::Write::write_all(&mut &f, content.as_bytes()).expect("write");
        f.set_modified(before).expect("set mtime");
    }

    #[test]
    fn rereads_on_change_and_after_the_period() {
        let dir = Dir::new("reread");
        let path = dir.0.join("token");
        std::fs::write(&path, "first-token\n").expect("write");
        let file = TokenFile::with_period(path.clone(), Duration::from_millis(300));
        assert_eq!(file.token().expect("token").expose(), "first-token");
        // A rotation as kubelet does it (new file renamed over): seen at once.
        std::fs::write(dir.0.join("tmp"), "second-token").expect("write");
        std::fs::rename(dir.0.join("tmp"), &path).expect("rename");
        assert_eq!(file.token().expect("token").expose(), "second-token");
        // A change the metadata does not show: seen after the period only.
        overwrite_unseen(&path, "third--token");
        assert_eq!(file.token().expect("token").expose(), "second-token");
        assert_eq!(file.reload().expect("token").expose(), "third--token");
        overwrite_unseen(&path, "forth--token");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(file.token().expect("token").expose(), "forth--token");
    }

    #[test]
    fn errors_name_the_path_and_never_the_token() {
        let dir = Dir::new("errors");
        let check = |content: Option<&[u8]>, want: &str| {
            let path = dir.0.join("token");
            let _ = std::fs::remove_file(&path);
            if let Some(c) = content {
                std::fs::write(&path, c).expect("write");
            }
            let err = TokenFile::new(path.clone()).token().expect_err("must fail");
            let text = format!("{err} {err:?}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(want), "{text}");
            assert!(!text.contains("s3cr3t"), "{text}");
        };
        check(None, "cannot read token file");
        check(Some(b" \n\t\n"), "is empty");
        check(Some(b"s3cr3t\ns3cr3t"), "cannot be sent");
        check(Some(b"s3cr3t\xff"), "cannot be sent");
    }

    #[test]
    fn a_vanished_file_keeps_the_last_good_token_until_forced() {
        let dir = Dir::new("vanished");
        let path = dir.0.join("token");
        std::fs::write(&path, "good").expect("write");
        let file = TokenFile::new(path.clone());
        assert_eq!(file.token().expect("token").expose(), "good");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(file.token().expect("kept").expose(), "good");
        assert!(matches!(file.reload(), Err(CredentialError::Read { .. })));
        assert_eq!(file.path(), path.as_path());
    }
}
