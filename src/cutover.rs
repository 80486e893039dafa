//! The cutovers by name: a closed set of built-ins, each spelled once here,
//! plus custom ones (a name and a [`CutoverSpec`] from the config, in a later
//! version). Code that decides per cutover matches on [`BuiltinCutover`], so
//! a new built-in is a compile error wherever it is not handled.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::families::TokenKind;
use crate::verdict::{Attribution, CutoverSpec};

/// The built-in cutovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BuiltinCutover {
    /// Deleting legacy (Secret-based) tokens: `serviceaccount_legacy_tokens_total` flat.
    LegacyTokens,
    /// Cleaning up auto-generated token Secrets (1.29+).
    LegacyAutoTokens,
    /// Turning off `--service-account-extend-token-expiration`.
    TokenExpiryExtension,
}

impl BuiltinCutover {
    /// Every built-in cutover, in the order of the config and the surfaces.
    pub const ALL: [BuiltinCutover; 3] = [
        BuiltinCutover::LegacyTokens,
        BuiltinCutover::LegacyAutoTokens,
        BuiltinCutover::TokenExpiryExtension,
    ];

    /// The name: the `cutover` label, the `[cutovers.NAME]` config table.
    pub const fn label(self) -> &'static str {
        match self {
            BuiltinCutover::LegacyTokens => "legacy-tokens",
            BuiltinCutover::LegacyAutoTokens => "legacy-auto-tokens",
            BuiltinCutover::TokenExpiryExtension => "token-expiry-extension",
        }
    }

    /// The built-in cutover of this name.
    pub fn from_label(name: &str) -> Option<BuiltinCutover> {
        BuiltinCutover::ALL.into_iter().find(|c| c.label() == name)
    }

    /// Its default window: a week for the legacy cutovers (weekly jobs
    /// exist), a day for the expiry extension (tokens are used hourly).
    pub const fn default_window(self) -> Duration {
        match self {
            BuiltinCutover::LegacyTokens | BuiltinCutover::LegacyAutoTokens => {
                Duration::from_secs(7 * 86_400)
            }
            BuiltinCutover::TokenExpiryExtension => Duration::from_secs(86_400),
        }
    }

    /// What decides it, with this window and tolerance.
    pub fn spec(self, window: Duration, tolerance: Duration) -> CutoverSpec {
        let (quiet, evidence, attribution) = match self {
            BuiltinCutover::LegacyTokens => (vec![TokenKind::Legacy.family().into()], None, None),
            BuiltinCutover::LegacyAutoTokens => (
                vec![
                    TokenKind::LegacyAuto.family().into(),
                    TokenKind::InvalidLegacyAuto.family().into(),
                ],
                None,
                // With --service-account-lookup=false, or tokens rejected
                // before the lookup, legacy uses are counted but not split:
                // they may be auto-generated ones.
                Some(Attribution {
                    total: TokenKind::Legacy.family().into(),
                    parts: [
                        TokenKind::LegacyAuto,
                        TokenKind::LegacyManual,
                        TokenKind::InvalidLegacyAuto,
                    ]
                    .iter()
                    .map(|k| k.family().into())
                    .collect(),
                }),
            ),
            BuiltinCutover::TokenExpiryExtension => (
                vec![TokenKind::Stale.family().into()],
                Some(TokenKind::Valid.family().into()),
                None,
            ),
        };
        CutoverSpec {
            name: Cutover::Builtin(self),
            quiet,
            evidence,
            window,
            tolerance,
            attribution,
        }
    }
}

/// A cutover: a built-in one, or a custom one named in the config.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cutover {
    /// One of the built-ins.
    Builtin(BuiltinCutover),
    /// A custom cutover, by its name (never a built-in's name).
    Custom(String),
}

impl Cutover {
    /// The name: the `cutover` label.
    pub fn label(&self) -> &str {
        match self {
            Cutover::Builtin(b) => b.label(),
            Cutover::Custom(name) => name,
        }
    }

    /// The name, as `str` (the same as [`Cutover::label`]).
    pub fn as_str(&self) -> &str {
        self.label()
    }

    /// The built-in cutover, if it is one.
    pub fn builtin(&self) -> Option<BuiltinCutover> {
        match self {
            Cutover::Builtin(b) => Some(*b),
            Cutover::Custom(_) => None,
        }
    }
}

impl From<BuiltinCutover> for Cutover {
    fn from(b: BuiltinCutover) -> Cutover {
        Cutover::Builtin(b)
    }
}

/// A name as it appears in a label or a file: a built-in's name is that
/// built-in, any other name a custom cutover.
impl From<&str> for Cutover {
    fn from(name: &str) -> Cutover {
        BuiltinCutover::from_label(name)
            .map_or_else(|| Cutover::Custom(name.to_owned()), Cutover::Builtin)
    }
}

impl AsRef<str> for Cutover {
    fn as_ref(&self) -> &str {
        self.label()
    }
}

impl fmt::Display for Cutover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl fmt::Display for BuiltinCutover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl PartialEq<str> for Cutover {
    fn eq(&self, other: &str) -> bool {
        self.label() == other
    }
}

impl PartialEq<&str> for Cutover {
    fn eq(&self, other: &&str) -> bool {
        self.label() == *other
    }
}

impl Serialize for Cutover {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

impl<'de> Deserialize<'de> for Cutover {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cutover, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Cutover::from(name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_spelled_once() {
        for b in BuiltinCutover::ALL {
            assert_eq!(BuiltinCutover::from_label(b.label()), Some(b));
            let c = Cutover::from(b.label());
            assert_eq!(c, Cutover::Builtin(b));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", b.label()));
            assert_eq!(serde_json::from_str::<Cutover>(&json).unwrap(), c);
            assert_eq!(b.spec(b.default_window(), Duration::ZERO).name, c);
        }
        let custom = Cutover::from("my-cutover");
        assert_eq!(custom, Cutover::Custom("my-cutover".into()));
        assert_eq!(custom.builtin(), None);
        assert_eq!(custom.to_string(), "my-cutover");
    }
}
