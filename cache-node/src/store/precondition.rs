//! Conditional requests: `If-Match` and `If-None-Match` evaluated against the version of the
//! key's live entry, under the same lock as the write they guard, so compare-and-set is atomic.

use super::Version;

/// The entity tags a condition lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EtagMatch {
    /// `*`: any current entry.
    Any,
    /// A list of versions; the condition holds for any of them.
    Versions(Vec<Version>),
}

impl EtagMatch {
    /// Whether `current` (the live entry's version, `None` if absent) matches.
    fn matches(&self, current: Option<Version>) -> bool {
        match (self, current) {
            (_, None) => false,
            (EtagMatch::Any, Some(_)) => true,
            (EtagMatch::Versions(versions), Some(version)) => versions.contains(&version),
        }
    }
}

/// The preconditions of one request, evaluated in the order of RFC 9110 §13.2.2.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preconditions {
    /// `If-Match`: the write happens only if the current entry matches (compare-and-set).
    pub if_match: Option<EtagMatch>,
    /// `If-None-Match`: the write happens only if the current entry does not match
    /// (`*` = create only).
    pub if_none_match: Option<EtagMatch>,
}

impl Preconditions {
    /// No conditions: the write always applies.
    pub fn none() -> Preconditions {
        Preconditions::default()
    }

    /// Create only (`If-None-Match: *`).
    pub fn create_only() -> Preconditions {
        Preconditions {
            if_match: None,
            if_none_match: Some(EtagMatch::Any),
        }
    }

    /// Compare-and-set against `version` (`If-Match: "<version>"`).
    pub fn if_version(version: Version) -> Preconditions {
        Preconditions {
            if_match: Some(EtagMatch::Versions(vec![version])),
            if_none_match: None,
        }
    }

    /// Whether the conditions hold when the key's live entry has version `current`.
    pub fn hold(&self, current: Option<Version>) -> bool {
        let if_match_ok = self
            .if_match
            .as_ref()
            .is_none_or(|tags| tags.matches(current));
        let if_none_match_ok = self
            .if_none_match
            .as_ref()
            .is_none_or(|tags| !tags.matches(current));
        if_match_ok && if_none_match_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_rfc_9110() {
        let v1 = Version::new(1);
        let v2 = Version::new(2);
        assert!(Preconditions::none().hold(None));
        assert!(Preconditions::none().hold(Some(v1)));
        assert!(Preconditions::create_only().hold(None));
        assert!(!Preconditions::create_only().hold(Some(v1)));
        assert!(Preconditions::if_version(v1).hold(Some(v1)));
        assert!(!Preconditions::if_version(v1).hold(Some(v2)));
        assert!(!Preconditions::if_version(v1).hold(None));
        let exists = Preconditions {
            if_match: Some(EtagMatch::Any),
            if_none_match: None,
        };
        assert!(exists.hold(Some(v2)) && !exists.hold(None));
        let not_v1 = Preconditions {
            if_match: None,
            if_none_match: Some(EtagMatch::Versions(vec![v1])),
        };
        assert!(not_v1.hold(None) && not_v1.hold(Some(v2)) && !not_v1.hold(Some(v1)));
    }
}
