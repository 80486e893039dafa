//! A push-based streaming extractor for the Prometheus text exposition
//! format (0.0.4, with the OpenMetrics bits kube-apiserver may emit).
//!
//! Bytes go in as chunks of any size (lines may be split anywhere, plain or
//! gzip); out comes a [`Page`] with the samples of a small set of *watched*
//! families. Lines of other families are skipped after looking at a few bytes,
//! without being parsed or buffered, so a 100 MB page costs about one
//! `memchr` pass and constant memory. A malformed line of a watched family is
//! an error naming the line, never dropped: silence would read as "no use".
//! So is a second sample of a series already on the page (same name, same
//! label set in any order), whatever its value: the error names both lines,
//! and no sample is picked over the other. Prometheus rejects such a page
//! too. The module is pure: no clock, no files, no network.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};

use memchr::memchr;

use crate::families;

/// The longest line of a watched family the extractor accepts. Real samples
/// are under 1 KiB; the cap keeps a broken page from growing memory.
pub const MAX_WATCHED_LINE: usize = 64 * 1024;

/// The chunk size [`extract_from_reader`] reads with.
pub const READ_CHUNK: usize = 64 * 1024;

/// Default cap on the series of one watched family on one page. The upstream
/// token counters have no labels and the reset sentinel has a few; a page
/// with more is patched or hostile, and memory must not follow it.
pub const DEFAULT_MAX_SERIES_PER_FAMILY: usize = 64;
/// Default cap on the series of all watched families on one page (one
/// instance).
pub const DEFAULT_MAX_SERIES_PER_PAGE: usize = 256;

/// The set of metric family names to extract from a page, and how many
/// series of them a page may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    names: Vec<String>,
    max_series_per_family: usize,
    max_series_per_page: usize,
}

impl Watch {
    /// Watches the given family names (duplicates and empty names dropped,
    /// order kept: it is the order of [`Page::absent`]).
    pub fn new<I, S>(names: I) -> Watch
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let name = name.into();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
        Watch {
            names: out,
            max_series_per_family: DEFAULT_MAX_SERIES_PER_FAMILY,
            max_series_per_page: DEFAULT_MAX_SERIES_PER_PAGE,
        }
    }

    /// The same watch with other caps on the series a page may carry: per
    /// watched family, and for all of them together. A page over a cap is
    /// rejected ([`ExpositionError::TooManySeries`]), never cut short.
    pub fn with_series_limits(mut self, per_family: usize, per_page: usize) -> Watch {
        self.max_series_per_family = per_family.max(1);
        self.max_series_per_page = per_page.max(1);
        self
    }

    /// The six token counters, the start time, the build info and the reset
    /// sentinel ([`families::default_watched`]).
    pub fn default_families() -> Watch {
        Watch::new(families::default_watched())
    }

    /// The watched names, in watch order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// One sample of a watched family, labels decoded (escapes resolved).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name as written (the family name, or the family name plus an
    /// OpenMetrics suffix such as `_created`).
    pub name: String,
    /// Label pairs in page order.
    pub labels: Vec<(String, String)>,
    /// The sample value (`NaN` and `±Inf` included).
    pub value: f64,
    /// The optional timestamp in milliseconds.
    pub timestamp_ms: Option<i64>,
}

/// What one page says about the watched families.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The samples of the watched families, in page order, one per series.
    pub samples: Vec<Sample>,
    /// Lines read (up to `# EOF` when present).
    pub lines: u64,
    watched: Vec<String>,
    /// True when at least one line, watched or not, looks like Prometheus
    /// text exposition (a sample, or a `# HELP`/`# TYPE`/`# UNIT` line):
    /// false means the input is not an exposition page at all.
    pub has_exposition: bool,
}

impl Page {
    /// True when the page has at least one sample named `family`.
    pub fn is_present(&self, family: &str) -> bool {
        self.samples.iter().any(|s| s.name == family)
    }

    /// The watched names without any sample, in watch order. Absent means
    /// unknown (older apiserver, `--disabled-metrics`), never zero.
    pub fn absent(&self) -> Vec<&str> {
        self.watched
            .iter()
            .map(String::as_str)
            .filter(|name| !self.is_present(name))
            .collect()
    }

    /// The sum of `family` over its series; `None` when absent (never 0).
    pub fn family_sum(&self, family: &str) -> Option<f64> {
        let mut series = self.series(family).peekable();
        series.peek()?;
        Some(series.map(|s| s.value).sum())
    }

    /// The samples named exactly `family`.
    pub fn series(&self, family: &str) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.name == family)
    }

    /// The value of `process_start_time_seconds`, if present.
    pub fn process_start_time(&self) -> Option<f64> {
        self.series(families::PROCESS_START_TIME)
            .next()
            .map(|s| s.value)
    }

    /// The `git_version` label of `kubernetes_build_info`, if present.
    pub fn kubernetes_version(&self) -> Option<&str> {
        self.samples
            .iter()
            .filter(|s| s.name == families::BUILD_INFO)
            .find_map(|s| label(s, families::BUILD_INFO_VERSION_LABEL))
    }
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExpositionError {
    /// A line of a watched family does not parse.
    #[error("line {line}: {family}: {problem}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// The watched family the line belongs to.
        family: String,
        /// What is wrong, with the offending text whole (bounded by
        /// [`MAX_WATCHED_LINE`]): a caller that knows a credential redacts
        /// it before shortening the text.
        problem: String,
    },
    /// A line of a watched family is longer than [`MAX_WATCHED_LINE`].
    #[error("line {line}: {family}: line longer than {limit} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: u64,
        /// The watched family the line belongs to.
        family: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// A watched family, or the watched families together, carry more series
    /// than the cap: the page is rejected rather than grow memory with it.
    #[error(
        "line {line}: {family}: more than {limit} series {scope} (a patched or hostile apiserver?); the page is rejected"
    )]
    TooManySeries {
        /// 1-based line number of the first series over the cap.
        line: u64,
        /// The watched family of that series.
        family: String,
        /// The cap.
        limit: usize,
        /// `"in this family"` or `"of watched families on this page"`.
        scope: &'static str,
    },
    /// The body starts like gzip but does not decode (corrupt or truncated).
    #[error("invalid or truncated gzip stream")]
    Gzip(#[source] io::Error),
    /// The decoded page is larger than the configured limit.
    #[error("page larger than {limit} bytes after decoding")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
}

impl ExpositionError {
    /// A bounded label for metrics: `malformed`, `decode`, `body_too_large`
    /// or `too_many_series`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ExpositionError::Malformed { .. } | ExpositionError::LineTooLong { .. } => "malformed",
            ExpositionError::Gzip(_) => "decode",
            ExpositionError::TooLarge { .. } => "body_too_large",
            ExpositionError::TooManySeries { .. } => "too_many_series",
        }
    }
}

/// Why [`extract_from_reader`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadPageError {
    /// Reading the input failed.
    #[error("reading the page")]
    Io(#[source] io::Error),
    /// The bytes read are not a usable page.
    #[error(transparent)]
    Page(#[from] ExpositionError),
}

/// Extracts watched families from plain exposition text, pushed in chunks.
pub struct Extractor {
    watched: Vec<String>,
    /// Indices of watched names by first byte: the fast reject.
    by_first_byte: Vec<Vec<u8>>,
    /// Bytes enough to classify any line (see `classify`).
    decide_len: usize,
    /// The current line when it must be kept across chunks.
    carry: Vec<u8>,
    /// True while discarding the rest of an unwatched line.
    skipping: bool,
    /// Complete lines seen so far.
    line_no: u64,
    /// Until a line looks like exposition (see [`looks_like_exposition`]):
    /// the start of the current line. `None` once one did.
    exposition_head: Option<Vec<u8>>,
    /// The watched family whose HELP/TYPE block we are in, with the name the
    /// block was opened with (the family, or its OpenMetrics base name).
    block: Option<(usize, String)>,
    eof: bool,
    samples: Vec<Sample>,
    /// The line of each sample, parallel to `samples`.
    sample_lines: Vec<u64>,
    /// Indices into `samples` by series hash: finds a repeated series
    /// without a second copy of any name or label.
    series: HashMap<u64, Vec<usize>>,
    /// Series kept per watched family, parallel to `watched`.
    per_family: Vec<usize>,
    max_series_per_family: usize,
    max_series_per_page: usize,
}

impl Extractor {
    /// An extractor for the families in `watch`.
    pub fn new(watch: Watch) -> Extractor {
        let mut by_first_byte = vec![Vec::new(); 256];
        for (i, name) in watch.names.iter().enumerate() {
            // Watch lists are a handful of names; u8 indices are plenty.
            if let (Some(&b), Ok(i)) = (name.as_bytes().first(), u8::try_from(i)) {
                by_first_byte[usize::from(b)].push(i);
            }
        }
        let max_len = watch.names.iter().map(String::len).max().unwrap_or(0);
        Extractor {
            per_family: vec![0; watch.names.len()],
            max_series_per_family: watch.max_series_per_family,
            max_series_per_page: watch.max_series_per_page,
            watched: watch.names,
            by_first_byte,
            decide_len: max_len + 32,
            carry: Vec::new(),
            skipping: false,
            line_no: 0,
            exposition_head: Some(Vec::new()),
            block: None,
            eof: false,
            samples: Vec::new(),
            sample_lines: Vec::new(),
            series: HashMap::new(),
        }
    }

    /// Pushes the next chunk of the page; lines may be split anywhere.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ExpositionError> {
        self.scan_for_exposition(chunk);
        let mut rest = chunk;
        while !rest.is_empty() && !self.eof {
            if self.skipping {
                let Some(nl) = memchr(b'\n', rest) else {
                    return Ok(());
                };
                self.skipping = false;
                self.line_no += 1;
                rest = &rest[nl + 1..];
                continue;
            }
            if self.carry.is_empty() {
                // Leading blanks are insignificant; dropping them here keeps
                // the carry short and the classification simple.
                let start = rest
                    .iter()
                    .position(|&b| b != b' ' && b != b'\t')
                    .unwrap_or(rest.len());
                rest = &rest[start..];
                if rest.is_empty() {
                    return Ok(());
                }
            }
            match memchr(b'\n', rest) {
                Some(nl) => {
                    let (part, tail) = (&rest[..nl], &rest[nl + 1..]);
                    rest = tail;
                    self.line_no += 1;
                    if self.carry.is_empty() {
                        self.line(part)?;
                    } else {
                        let mut line = std::mem::take(&mut self.carry);
                        let result = self.finish_carried(&mut line, part);
                        line.clear();
                        self.carry = line;
                        result?;
                    }
                }
                None => return self.partial(rest),
            }
        }
        Ok(())
    }

    /// Ends the page (a last line without newline is read) and returns it.
    pub fn finish(mut self) -> Result<Page, ExpositionError> {
        if !self.eof {
            if self.skipping {
                self.line_no += 1;
            } else if !self.carry.is_empty() {
                self.line_no += 1;
                let line = std::mem::take(&mut self.carry);
                self.line(&line)?;
            }
        }
        Ok(Page {
            samples: self.samples,
            lines: self.line_no,
            // The last line may lack its newline.
            has_exposition: self
                .exposition_head
                .as_ref()
                .is_none_or(|head| looks_like_exposition(head, head.len() <= HEAD_BYTES)),
            watched: self.watched,
        })
    }

    /// Completes a line begun in an earlier chunk. A line still undecided
    /// (shorter than `decide_len` so far) is decided on its first
    /// `decide_len` bytes before the rest is copied, so a long unwatched line
    /// is never assembled.
    fn finish_carried(&mut self, line: &mut Vec<u8>, part: &[u8]) -> Result<(), ExpositionError> {
        let top = self.decide_len.saturating_sub(line.len()).min(part.len());
        line.extend_from_slice(&part[..top]);
        let remaining = &part[top..];
        if !remaining.is_empty() {
            if let Class::Skip(effect) = self.classify_prefix(line, false) {
                self.apply(effect);
                return Ok(());
            }
            self.check_len(line, line.len() + remaining.len())?;
            line.extend_from_slice(remaining);
        }
        self.line(line)
    }

    /// The current line continues in the next chunk: keep only what is
    /// needed to decide, and the whole line only if it will be parsed.
    fn partial(&mut self, rest: &[u8]) -> Result<(), ExpositionError> {
        let take = self
            .decide_len
            .saturating_sub(self.carry.len())
            .min(rest.len());
        self.carry.extend_from_slice(&rest[..take]);
        match self.classify_prefix(&self.carry, false) {
            Class::NeedMore => {}
            Class::Skip(effect) => {
                self.apply(effect);
                self.carry.clear();
                self.skipping = true;
                return Ok(());
            }
            Class::Keep => {}
        }
        let more = &rest[take..];
        self.check_len(&self.carry, self.carry.len() + more.len())?;
        self.carry.extend_from_slice(more);
        Ok(())
    }

    fn check_len(&self, prefix: &[u8], len: usize) -> Result<(), ExpositionError> {
        if len <= MAX_WATCHED_LINE {
            return Ok(());
        }
        let family = match &self.block {
            Some((i, _)) => self.watched[*i].clone(),
            None => self
                .watched
                .iter()
                .find(|n| prefix.starts_with(n.as_bytes()))
                .cloned()
                .unwrap_or_else(|| "# EOF".to_owned()),
        };
        Err(ExpositionError::LineTooLong {
            line: self.line_no + 1,
            family,
            limit: MAX_WATCHED_LINE,
        })
    }

    /// Classifies on at most `decide_len` bytes, so the outcome does not
    /// depend on where chunk boundaries fall.
    fn classify_prefix(&self, line: &[u8], complete: bool) -> Class {
        let n = line.len().min(self.decide_len);
        let class = self.classify(&line[..n], complete && n == line.len());
        match class {
            Class::NeedMore if n >= self.decide_len => Class::Skip(None),
            other => other,
        }
    }

    /// Decides from the start of a line (leading blanks removed) whether it
    /// is skipped (possibly changing the current block), kept for parsing,
    /// or needs more bytes to tell.
    fn classify(&self, p: &[u8], complete: bool) -> Class {
        let Some(&first) = p.first() else {
            return if complete {
                Class::Skip(None)
            } else {
                Class::NeedMore
            };
        };
        if first == b'#' {
            return self.classify_comment(&p[1..], complete);
        }
        if self.block.is_some() {
            return Class::Keep;
        }
        let mut undecided = false;
        for &i in &self.by_first_byte[usize::from(first)] {
            let name = self.watched[usize::from(i)].as_bytes();
            if p.len() > name.len() {
                // A carriage return right after the name is either the end of
                // the line (trimmed once complete) or garbage: parsed either
                // way, so the outcome does not depend on where the chunk ends.
                if p.starts_with(name) && matches!(p[name.len()], b'{' | b' ' | b'\t' | b'\r') {
                    return Class::Keep;
                }
            } else if p == name && complete {
                // A watched name with nothing after it: parse to report it.
                return Class::Keep;
            } else if !complete && name.starts_with(p) {
                undecided = true;
            }
        }
        if undecided {
            Class::NeedMore
        } else {
            Class::Skip(None)
        }
    }

    fn classify_comment(&self, p: &[u8], complete: bool) -> Class {
        let p = trim_start(p);
        let need = |have: &[u8], want: &[u8]| !complete && want.starts_with(have);
        if p.starts_with(b"EOF") {
            return if trim_end(&p[3..]).is_empty() {
                Class::Keep
            } else {
                Class::Skip(None)
            };
        }
        for keyword in [&b"HELP"[..], b"TYPE", b"UNIT"] {
            if p.len() <= keyword.len() {
                if need(p, keyword) {
                    return Class::NeedMore;
                }
                continue;
            }
            if !p.starts_with(keyword) || !matches!(p[keyword.len()], b' ' | b'\t') {
                continue;
            }
            let rest = trim_start(&p[keyword.len()..]);
            let end = rest.iter().position(|&b| !is_name_byte(b));
            let name = match end {
                Some(end) => &rest[..end],
                None if complete => rest,
                None => return Class::NeedMore,
            };
            return Class::Skip(Some(self.block_for(name)));
        }
        if need(p, b"EOF") {
            return Class::NeedMore;
        }
        Class::Skip(None)
    }

    /// The block a HELP/TYPE/UNIT line for `name` opens: watched when the name
    /// is watched, or when it is the OpenMetrics base of a watched `_total`.
    fn block_for(&self, name: &[u8]) -> Option<(usize, String)> {
        let i = self.watched.iter().position(|w| {
            let w = w.as_bytes();
            w == name
                || (w.len() == name.len() + 6 && w.starts_with(name) && w.ends_with(b"_total"))
        })?;
        Some((i, String::from_utf8_lossy(name).into_owned()))
    }

    /// Looks for a first exposition line in `chunk`, independently of the
    /// extraction; free once one is found (real pages start with one).
    fn scan_for_exposition(&mut self, chunk: &[u8]) {
        let Some(head) = &mut self.exposition_head else {
            return;
        };
        let mut rest = chunk;
        loop {
            let nl = memchr(b'\n', rest);
            let part = &rest[..nl.unwrap_or(rest.len())];
            let room = (HEAD_BYTES + 1).saturating_sub(head.len()).min(part.len());
            head.extend_from_slice(&part[..room]);
            let Some(nl) = nl else {
                return;
            };
            let line = trim_end(trim_start(head));
            let complete = head.len() <= HEAD_BYTES;
            if looks_like_exposition(line, complete) {
                self.exposition_head = None;
                return;
            }
            head.clear();
            rest = &rest[nl + 1..];
        }
    }

    fn apply(&mut self, effect: Option<Option<(usize, String)>>) {
        if let Some(block) = effect {
            self.block = block;
        }
    }

    /// Handles one complete line (without its `\n`).
    fn line(&mut self, raw: &[u8]) -> Result<(), ExpositionError> {
        let line = trim_end(trim_start(raw));
        match self.classify_prefix(line, true) {
            Class::Skip(effect) => {
                self.apply(effect);
                Ok(())
            }
            Class::NeedMore => Ok(()),
            Class::Keep if line.first() == Some(&b'#') => {
                // Only `# EOF` is kept among comments: the page ends here.
                self.eof = true;
                Ok(())
            }
            Class::Keep => self.sample_line(line),
        }
    }

    fn sample_line(&mut self, line: &[u8]) -> Result<(), ExpositionError> {
        if let Some((i, base)) = &self.block {
            let (i, base) = (*i, base.clone());
            match parse_sample(line) {
                Ok(sample) if belongs(&sample.name, &base) => return self.store(i, sample),
                // A valid sample of another family: the watched block ended
                // without a HELP/TYPE line (untyped family).
                Ok(_) => self.block = None,
                Err(problem) => {
                    let name_end = line.iter().position(|&b| !is_name_byte(b));
                    let name = String::from_utf8_lossy(&line[..name_end.unwrap_or(line.len())]);
                    let problem = if belongs(&name, &base) {
                        problem
                    } else {
                        format!("{} is not a sample of this family ({problem})", show(line))
                    };
                    return Err(self.malformed(i, problem));
                }
            }
            return match self.classify_prefix(line, true) {
                Class::Keep => self.sample_line(line),
                _ => Ok(()),
            };
        }
        let family = self
            .watched
            .iter()
            .position(|w| {
                line.strip_prefix(w.as_bytes())
                    .is_some_and(|rest| rest.first().is_none_or(|b| !is_name_byte(*b)))
            })
            .unwrap_or(0);
        match parse_sample(line) {
            Ok(sample) => self.store(family, sample),
            Err(problem) => Err(self.malformed(family, problem)),
        }
    }

    fn malformed(&self, family: usize, problem: String) -> ExpositionError {
        ExpositionError::Malformed {
            line: self.line_no,
            family: self.watched.get(family).cloned().unwrap_or_default(),
            problem,
        }
    }

    /// Keeps a sample of watched family `family`, or fails if its series
    /// already has a sample on this page.
    fn store(&mut self, family: usize, sample: Sample) -> Result<(), ExpositionError> {
        let hash = series_hash(&sample);
        let same = self.series.get(&hash).and_then(|indices| {
            indices
                .iter()
                .copied()
                .find(|&j| same_series(&self.samples[j], &sample))
        });
        if let Some(first) = same {
            let problem = format!(
                "series {} sampled twice: first on line {} (value {}), again here (value {})",
                show_series(&sample),
                self.sample_lines[first],
                self.samples[first].value,
                sample.value
            );
            return Err(self.malformed(family, problem));
        }
        let over =
            if self.per_family.get(family).copied().unwrap_or(0) >= self.max_series_per_family {
                Some((self.max_series_per_family, "in this family"))
            } else if self.samples.len() >= self.max_series_per_page {
                Some((self.max_series_per_page, "of watched families on this page"))
            } else {
                None
            };
        if let Some((limit, scope)) = over {
            return Err(ExpositionError::TooManySeries {
                line: self.line_no,
                family: self.watched.get(family).cloned().unwrap_or_default(),
                limit,
                scope,
            });
        }
        if let Some(n) = self.per_family.get_mut(family) {
            *n += 1;
        }
        self.series
            .entry(hash)
            .or_default()
            .push(self.samples.len());
        self.samples.push(sample);
        self.sample_lines.push(self.line_no);
        Ok(())
    }
}

/// Detects gzip by its magic bytes and streams either kind into an
/// [`Extractor`], with a limit on the decoded size.
pub struct PageDecoder {
    mode: Mode,
}

impl PageDecoder {
    /// A decoder without a size limit.
    pub fn new(watch: Watch) -> PageDecoder {
        PageDecoder::with_limit(watch, u64::MAX)
    }

    /// A decoder that fails once more than `max_decoded_bytes` come out of the
    /// (possibly gzip) body: a guard against gzip bombs and runaway pages.
    pub fn with_limit(watch: Watch, max_decoded_bytes: u64) -> PageDecoder {
        PageDecoder {
            mode: Mode::Sniffing(
                Vec::with_capacity(2),
                Sink {
                    extractor: Extractor::new(watch),
                    decoded: 0,
                    limit: max_decoded_bytes,
                    error: None,
                },
            ),
        }
    }

    /// Pushes the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ExpositionError> {
        if let Mode::Sniffing(head, _) = &mut self.mode {
            let take = (2 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() < 2 {
                return Ok(());
            }
            let Mode::Sniffing(head, sink) = std::mem::replace(&mut self.mode, Mode::Failed) else {
                return Ok(());
            };
            self.mode = if head == GZIP_MAGIC {
                Mode::Gzip(Box::new(Gzip {
                    decoder: flate2::write::MultiGzDecoder::new(sink),
                    pending: Vec::with_capacity(GZIP_PIECE),
                }))
            } else {
                Mode::Plain(sink)
            };
            self.write(&head)?;
            return self.write(&chunk[take..]);
        }
        self.write(chunk)
    }

    /// Ends the body and returns the page.
    pub fn finish(self) -> Result<Page, ExpositionError> {
        let sink = match self.mode {
            Mode::Sniffing(head, mut sink) => {
                write_sink(&mut sink, &head)?;
                sink
            }
            Mode::Plain(sink) => sink,
            Mode::Gzip(gzip) => {
                let Gzip {
                    mut decoder,
                    pending,
                } = *gzip;
                if let Err(err) = decoder
                    .write_all(&pending)
                    .and_then(|()| decoder.try_finish())
                {
                    return Err(decoder
                        .get_mut()
                        .error
                        .take()
                        .unwrap_or(ExpositionError::Gzip(err)));
                }
                match decoder.finish() {
                    Ok(sink) => sink,
                    Err(err) => return Err(ExpositionError::Gzip(err)),
                }
            }
            Mode::Failed => {
                return Err(ExpositionError::Gzip(io::Error::other(
                    "decoder used after an error",
                )));
            }
        };
        sink.extractor.finish()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ExpositionError> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.mode {
            Mode::Plain(sink) => write_sink(sink, bytes),
            Mode::Gzip(gzip) => match gzip.write(bytes) {
                Ok(()) => Ok(()),
                Err(err) => {
                    let typed = gzip.decoder.get_mut().error.take();
                    self.mode = Mode::Failed;
                    Err(typed.unwrap_or(ExpositionError::Gzip(err)))
                }
            },
            Mode::Sniffing(..) | Mode::Failed => Ok(()),
        }
    }
}

/// Reads a page (plain or gzip) from `r` in [`READ_CHUNK`] chunks.
pub fn extract_from_reader(watch: Watch, mut r: impl Read) -> Result<Page, ReadPageError> {
    let mut decoder = PageDecoder::new(watch);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => decoder.feed(&buf[..n])?,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(ReadPageError::Io(err)),
        }
    }
    Ok(decoder.finish()?)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The suffixes a sample name may add to its family's name inside the
/// family's block (OpenMetrics counters, histograms, summaries, info).
const SUFFIXES: [&str; 8] = [
    "_total", "_created", "_bucket", "_sum", "_count", "_info", "_gsum", "_gcount",
];

enum Class {
    /// More bytes are needed to decide.
    NeedMore,
    /// Not parsed; `Some` when the line opens a block (`Some(None)`: an
    /// unwatched one).
    Skip(Option<Option<(usize, String)>>),
    /// Parsed once complete.
    Keep,
}

enum Mode {
    Sniffing(Vec<u8>, Sink),
    Plain(Sink),
    Gzip(Box<Gzip>),
    Failed,
}

/// How many compressed bytes reach the gzip decoder per call. Whether the
/// output a call decodes before hitting corrupt data is delivered depends on
/// how the input was split, so the decoder always gets the body in the same
/// pieces, at fixed offsets of the stream: a corrupt stream that also exceeds
/// the size limit gives the same error however the network chunked it.
const GZIP_PIECE: usize = 4096;

/// The gzip side of a [`PageDecoder`]: the decoder and the compressed bytes
/// short of the next whole [`GZIP_PIECE`].
struct Gzip {
    decoder: flate2::write::MultiGzDecoder<Sink>,
    pending: Vec<u8>,
}

impl Gzip {
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if !self.pending.is_empty() {
            let take = (GZIP_PIECE - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < GZIP_PIECE {
                return Ok(());
            }
            self.decoder.write_all(&self.pending)?;
            self.pending.clear();
        }
        let whole = bytes.len() - bytes.len() % GZIP_PIECE;
        for piece in bytes[..whole].chunks(GZIP_PIECE) {
            self.decoder.write_all(piece)?;
        }
        self.pending.extend_from_slice(&bytes[whole..]);
        Ok(())
    }
}

/// The decoded side of a [`PageDecoder`]: counts bytes and feeds the
/// extractor, keeping the typed error that `io::Write` cannot carry.
struct Sink {
    extractor: Extractor,
    decoded: u64,
    limit: u64,
    error: Option<ExpositionError>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Err(io::Error::other("page rejected"));
        }
        match write_sink(self, buf) {
            Ok(()) => Ok(buf.len()),
            Err(err) => {
                self.error = Some(err);
                Err(io::Error::other("page rejected"))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_sink(sink: &mut Sink, bytes: &[u8]) -> Result<(), ExpositionError> {
    // The bytes within the limit are read before the limit is reported, so a
    // malformed line before it gives the same error however the body is
    // chunked.
    let room = sink.limit.saturating_sub(sink.decoded);
    let fits = usize::try_from(room).map_or(bytes.len(), |room| room.min(bytes.len()));
    sink.decoded = sink.decoded.saturating_add(bytes.len() as u64);
    sink.extractor.feed(&bytes[..fits])?;
    if fits < bytes.len() {
        return Err(ExpositionError::TooLarge { limit: sink.limit });
    }
    Ok(())
}

/// The label pairs of `sample` sorted, so order on the page does not matter.
fn sorted_labels(sample: &Sample) -> Vec<&(String, String)> {
    let mut labels: Vec<&(String, String)> = sample.labels.iter().collect();
    labels.sort_unstable();
    labels
}

fn series_hash(sample: &Sample) -> u64 {
    let mut h = DefaultHasher::new();
    sample.name.hash(&mut h);
    sorted_labels(sample).hash(&mut h);
    h.finish()
}

fn same_series(a: &Sample, b: &Sample) -> bool {
    a.name == b.name && a.labels.len() == b.labels.len() && sorted_labels(a) == sorted_labels(b)
}

/// `name{k="v",…}` as on the page (escapes restored), whole: the caller
/// redacts any credential the text may carry before it shortens it (a
/// watched line is at most [`MAX_WATCHED_LINE`] bytes, so this is bounded).
fn show_series(sample: &Sample) -> String {
    let mut out = sample.name.clone();
    if !sample.labels.is_empty() {
        out.push('{');
        for (n, (k, v)) in sample.labels.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            out.push_str(&format!("{k}=\"{v}\""));
        }
        out.push('}');
    }
    out
}

fn label<'a>(sample: &'a Sample, key: &str) -> Option<&'a str> {
    sample
        .labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn belongs(name: &str, base: &str) -> bool {
    name == base
        || name
            .strip_prefix(base)
            .is_some_and(|suffix| SUFFIXES.contains(&suffix))
}

/// Bytes of a line's start kept to tell whether it looks like exposition.
const HEAD_BYTES: usize = 256;

/// True when the start of a line looks like text
/// exposition: `# HELP`/`# TYPE`/`# UNIT` and a name, or a sample (a metric
/// name, or `{"quoted"`, then labels or a value that starts like a number).
/// A prefix (`complete` false) that ends before the value counts: only
/// prefixes are kept of long unwatched lines.
fn looks_like_exposition(line: &[u8], complete: bool) -> bool {
    let line = trim_end(trim_start(line));
    if let Some(comment) = line.strip_prefix(b"#") {
        let comment = trim_start(comment);
        return [&b"HELP"[..], b"TYPE", b"UNIT"].iter().any(|keyword| {
            comment.strip_prefix(*keyword).is_some_and(|rest| {
                matches!(rest.first(), Some(b' ' | b'\t'))
                    && trim_start(rest).first().is_some_and(|&b| is_name_byte(b))
            })
        });
    }
    if let Some(quoted) = line.strip_prefix(b"{\"") {
        // `{"name"}` or `{"name",label="v"}`, never JSON's `{"key":`.
        return match memchr(b'"', quoted) {
            Some(end) => match quoted.get(end + 1) {
                Some(b) => matches!(b, b'}' | b','),
                None => !complete,
            },
            None => !complete,
        };
    }
    if !line
        .first()
        .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
    {
        return false;
    }
    let end = line.iter().position(|&b| !is_name_byte(b));
    let Some(end) = end else {
        return !complete;
    };
    match line[end] {
        b'{' => true,
        b' ' | b'\t' => {
            let value = trim_start(&line[end..]);
            match value.first() {
                None => !complete,
                Some(&b) => {
                    b.is_ascii_digit()
                        || matches!(b, b'+' | b'-' | b'.')
                        || value.starts_with(b"NaN")
                        || value.starts_with(b"Inf")
                }
            }
        }
        _ => false,
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn trim_start(p: &[u8]) -> &[u8] {
    let start = p
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(p.len());
    &p[start..]
}

fn trim_end(p: &[u8]) -> &[u8] {
    let end = p
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    &p[..end]
}

/// Shows page text in an error, quoted and whole: a server can echo a
/// credential into its page, so the text is never cut here, where no
/// credential is known; the caller redacts it, then shortens it (a watched
/// line is at most [`MAX_WATCHED_LINE`] bytes, so this is bounded).
fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// Parses one sample line (trimmed, no newline): name, optional labels,
/// value, optional integer timestamp, optional OpenMetrics exemplar.
fn parse_sample(line: &[u8]) -> Result<Sample, String> {
    let name_end = line
        .iter()
        .position(|&b| !is_name_byte(b))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name[0].is_ascii_digit() {
        return Err(format!("no metric name at the start of {}", show(line)));
    }
    let name = String::from_utf8_lossy(name).into_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.first() == Some(&b'{') {
        rest = parse_labels(&rest[1..], &mut labels)?;
    } else if !rest.is_empty() && !matches!(rest[0], b' ' | b'\t') {
        return Err(format!("unexpected {} after the metric name", show(rest)));
    }
    rest = trim_start(rest);
    let (value_text, after) = split_token(rest);
    if value_text.is_empty() {
        return Err("missing value".to_owned());
    }
    let value = parse_value(value_text)?;
    let rest = trim_start(after);
    let (ts_text, after) = split_token(rest);
    let timestamp_ms = if ts_text.is_empty() || ts_text[0] == b'#' {
        None
    } else {
        let text = std::str::from_utf8(ts_text).unwrap_or("");
        Some(
            text.parse::<i64>()
                .map_err(|_| format!("timestamp {} is not an integer", show(ts_text)))?,
        )
    };
    let tail = trim_start(if timestamp_ms.is_some() { after } else { rest });
    // An OpenMetrics exemplar (`# {…} v`) may follow; anything else is junk.
    if !tail.is_empty() && tail[0] != b'#' {
        return Err(format!("unexpected text {} after the value", show(tail)));
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

fn split_token(p: &[u8]) -> (&[u8], &[u8]) {
    let end = p
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(p.len());
    (&p[..end], &p[end..])
}

fn parse_value(text: &[u8]) -> Result<f64, String> {
    let not_number = || format!("value {} is not a number", show(text));
    let s = std::str::from_utf8(text).map_err(|_| not_number())?;
    // Go's ParseFloat (what Prometheus uses) takes these spellings; Rust's
    // parser also takes "infinity" and friends, which are harmless.
    s.parse::<f64>().map_err(|_| not_number())
}

/// Parses `name="value", …}` after the opening brace; returns the rest.
fn parse_labels<'a>(
    mut p: &'a [u8],
    labels: &mut Vec<(String, String)>,
) -> Result<&'a [u8], String> {
    loop {
        p = trim_start(p);
        match p.first() {
            None => return Err("label set not closed with '}'".to_owned()),
            Some(b'}') => return Ok(&p[1..]),
            Some(_) => {}
        }
        let key_end = p.iter().position(|&b| !is_name_byte(b)).unwrap_or(p.len());
        let key = &p[..key_end];
        if key.is_empty() || key[0].is_ascii_digit() || key.contains(&b':') {
            return Err(format!("bad label name at {}", show(p)));
        }
        let key = String::from_utf8_lossy(key).into_owned();
        p = trim_start(&p[key_end..]);
        if p.first() != Some(&b'=') {
            return Err(format!("expected '=' after label {key}"));
        }
        p = trim_start(&p[1..]);
        if p.first() != Some(&b'"') {
            return Err(format!("expected '\"' to open the value of label {key}"));
        }
        let (value, after) = parse_quoted(&p[1..], &key)?;
        labels.push((key, value));
        p = trim_start(after);
        match p.first() {
            Some(b',') => p = &p[1..],
            Some(b'}') => return Ok(&p[1..]),
            _ => {
                return Err(format!(
                    "expected ',' or '}}' after a label, found {}",
                    show(p)
                ));
            }
        }
    }
}

/// Decodes a label value up to its closing quote (`\\`, `\"`, `\n`).
fn parse_quoted<'a>(p: &'a [u8], key: &str) -> Result<(String, &'a [u8]), String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'"' => {
                let value = String::from_utf8(out)
                    .map_err(|_| format!("value of label {key} is not UTF-8"))?;
                return Ok((value, &p[i + 1..]));
            }
            b'\\' => {
                match p.get(i + 1) {
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'"') => out.push(b'"'),
                    Some(b'n') => out.push(b'\n'),
                    Some(&other) => {
                        return Err(format!(
                            "invalid escape \\{} in label {key}",
                            char::from(other)
                        ));
                    }
                    None => break,
                }
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err(format!("value of label {key} not closed with '\"'"))
}
