//! Prometheus-compatible history (Prometheus, Thanos, Mimir, VictoriaMetrics)
//! as a source of samples for the same ledger the scrapes feed.
//!
//! - `error.rs`: [`HistoryError`], with the bounded reasons
//!   `history_unreachable`, `history_rejected`, `history_incomplete`.
//! - `parse.rs` (pure): a `/api/v1/query` answer with a range selector (a
//!   matrix of raw samples) into [`Series`], or a typed error.
//! - `feed.rs` (pure): [`Feeder`] turns the series of one time chunk into
//!   the ledger's observations exactly as scrapes would: same resets, holes
//!   where an instance's samples have a gap longer than its own spacing
//!   allows, instances whose `up` series stops leave.
//! - `client.rs` (shell): the HTTP client (bearer token file, basic auth,
//!   CA file, extra headers, timeout, retries with backoff, bounded body) and
//!   [`backfill_ledger`], which queries a span in bounded chunks.
//!
//! Only raw samples are read (`family{selector}[1d]` at a time `t`), never
//! `rate()` or `increase()`, which extrapolate.

mod client;
mod error;
mod feed;
mod parse;

pub use self::client::{
    BackfillReport, HistoryClient, backfill_ledger, backfill_with, fetch_chunk,
};
pub use self::error::{HistoryError, HistoryErrorKind};
pub use self::feed::{ChunkOutcome, Feeder};
pub use self::parse::{Series, parse_query_response};
