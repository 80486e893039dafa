//! Why a history query gave no usable evidence, with a bounded reason.

use std::fmt;

/// The bounded reason of a [`HistoryError`], the label of
/// `cutover_history_errors_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryErrorKind {
    /// The source could not be reached (connect, timeout, TLS, credentials).
    HistoryUnreachable,
    /// The source answered, but not with usable data: an HTTP error, a
    /// `status: error` (query limits included), a body that is not a
    /// Prometheus API answer (HTML, garbage), samples out of order.
    HistoryRejected,
    /// The answer is partial: warnings (a Thanos partial response), a
    /// truncated body, or a body over the size limit.
    HistoryIncomplete,
}

impl HistoryErrorKind {
    /// Every reason, for declaring the metric's series.
    pub const ALL: [HistoryErrorKind; 3] = [
        HistoryErrorKind::HistoryUnreachable,
        HistoryErrorKind::HistoryRejected,
        HistoryErrorKind::HistoryIncomplete,
    ];

    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            HistoryErrorKind::HistoryUnreachable => "history_unreachable",
            HistoryErrorKind::HistoryRejected => "history_rejected",
            HistoryErrorKind::HistoryIncomplete => "history_incomplete",
        }
    }
}

impl fmt::Display for HistoryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A history query that gave no usable evidence. Never read as "no uses":
/// the span it covered stays unobserved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// See [`HistoryErrorKind::HistoryUnreachable`].
    #[error("history_unreachable: {detail}")]
    Unreachable {
        /// What failed (never a secret).
        detail: String,
    },
    /// See [`HistoryErrorKind::HistoryRejected`].
    #[error("history_rejected: {detail}")]
    Rejected {
        /// What was wrong.
        detail: String,
    },
    /// See [`HistoryErrorKind::HistoryIncomplete`].
    #[error("history_incomplete: {detail}")]
    Incomplete {
        /// What was missing.
        detail: String,
    },
}

impl HistoryError {
    /// The bounded reason.
    pub fn kind(&self) -> HistoryErrorKind {
        match self {
            HistoryError::Unreachable { .. } => HistoryErrorKind::HistoryUnreachable,
            HistoryError::Rejected { .. } => HistoryErrorKind::HistoryRejected,
            HistoryError::Incomplete { .. } => HistoryErrorKind::HistoryIncomplete,
        }
    }

    pub(crate) fn unreachable(detail: impl Into<String>) -> HistoryError {
        HistoryError::Unreachable {
            detail: detail.into(),
        }
    }

    pub(crate) fn rejected(detail: impl Into<String>) -> HistoryError {
        HistoryError::Rejected {
            detail: detail.into(),
        }
    }

    pub(crate) fn incomplete(detail: impl Into<String>) -> HistoryError {
        HistoryError::Incomplete {
            detail: detail.into(),
        }
    }
}
