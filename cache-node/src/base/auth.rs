//! The bearer tokens (contract 3). Clients present the cluster's token, from the Secret
//! `spec.auth` names, on key routes (and to RESP `AUTH`); peers present a [`PeerCredential`]
//! of their own, from the Secret the operator generates, on the internal routes. The HTTP
//! layer checks them, replication presents the peers'.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use subtle::ConstantTimeEq;

/// The shared secret clients and peers present. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Arc<str>);

/// Why a token was refused at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthTokenError {
    /// Empty or only whitespace: would accept `Authorization: Bearer `.
    #[error("the auth token is empty; put a non-empty token in the Secret")]
    Empty,
    /// A character an HTTP header cannot carry.
    #[error(
        "the auth token contains a character an HTTP header cannot carry (only visible ASCII \
         is allowed; a trailing newline in the Secret is trimmed)"
    )]
    NotHeaderSafe,
}

impl AuthToken {
    /// Validates a token. Surrounding whitespace (a newline at the end of a Secret file) is
    /// trimmed.
    ///
    /// # Errors
    /// [`AuthTokenError`] when the token is empty or cannot travel in a header.
    pub fn new(token: &str) -> Result<AuthToken, AuthTokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthTokenError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthTokenError::NotHeaderSafe);
        }
        Ok(AuthToken(token.into()))
    }

    /// The `Authorization` header value that carries this token (used by the replication
    /// client towards peers).
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::try_from(format!("Bearer {}", self.0))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// Whether an `Authorization` header carries this token, compared in constant time. The
    /// scheme is case-insensitive (RFC 9110 §11.1: `BEARER x` is the same credential as
    /// `Bearer x`), and one or more spaces may separate it from the token.
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(presented) = authorization
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_credential)
        else {
            return false;
        };
        bool::from(presented.as_bytes().ct_eq(self.0.as_bytes()))
    }

    /// Whether a password given in a protocol's own login command (RESP `AUTH`, `HELLO ...
    /// AUTH`) is this token, compared in constant time.
    pub fn admits_password(&self, password: &[u8]) -> bool {
        bool::from(password.ct_eq(self.0.as_bytes()))
    }
}

/// The peers' credential: a token of its own (`--peer-token`, from the Secret the operator
/// generates per cluster), never the clients' token, so that a client cannot post records to
/// `/internal/*`. A node accepts the current token and, after a rotation, the previous one,
/// and presents the current one first: while a rolling restart runs, a pod that has the new
/// token falls back to the previous one towards a pod that does not know the new one yet, so
/// replication is never cut by a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCredential {
    /// Presented to peers, and accepted.
    current: AuthToken,
    /// Accepted until the next rotation; presented only to a peer that refused `current`.
    previous: Option<AuthToken>,
}

impl PeerCredential {
    /// The credential presenting `current` and also accepting `previous`.
    pub fn new(current: AuthToken, previous: Option<AuthToken>) -> PeerCredential {
        PeerCredential { current, previous }
    }

    /// Whether an `Authorization` header carries the current or the previous token (both
    /// compared, in constant time each).
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let current = self.current.admits(authorization);
        let previous = self
            .previous
            .as_ref()
            .is_some_and(|previous| previous.admits(authorization));
        current | previous
    }

    /// The `Authorization` values to present, in order: the current token, then the previous
    /// one for a peer that has not learnt the current one yet.
    pub fn header_values(&self) -> Vec<HeaderValue> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(AuthToken::header_value)
            .collect()
    }

    /// Whether `token` is one of this credential's tokens (it must not be the clients').
    pub fn contains(&self, token: &AuthToken) -> bool {
        &self.current == token || self.previous.as_ref() == Some(token)
    }
}

/// The token of an `Authorization: Bearer <token>` value, whatever the case of the scheme.
fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        assert_eq!(AuthToken::new(" \n"), Err(AuthTokenError::Empty));
        assert_eq!(AuthToken::new("a b"), Err(AuthTokenError::NotHeaderSafe));
        let token = AuthToken::new("s3cret\n").expect("valid");
        assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
        assert!(token.admits(Some(&token.header_value())));
        assert!(token.admits(Some(&HeaderValue::from_static("bearer s3cret"))));
        assert!(token.admits(Some(&HeaderValue::from_static("BEARER s3cret"))));
        assert!(token.admits(Some(&HeaderValue::from_static("BeArEr   s3cret"))));
        assert!(!token.admits(Some(&HeaderValue::from_static("Bearers3cret"))));
        assert!(!token.admits(Some(&HeaderValue::from_static("Bearer"))));
        assert!(!token.admits(Some(&HeaderValue::from_static("Bearer s3cre"))));
        assert!(!token.admits(Some(&HeaderValue::from_static("Basic s3cret"))));
        assert!(!token.admits(None));
        assert!(token.admits_password(b"s3cret"));
        assert!(!token.admits_password(b"s3cret "));
    }

    #[test]
    fn a_peer_credential_accepts_the_current_and_the_previous_token_and_presents_current_first() {
        let token = |t: &str| AuthToken::new(t).expect("valid");
        let rotated = PeerCredential::new(token("new"), Some(token("old")));
        let presented = rotated.header_values();
        assert_eq!(
            presented,
            [token("new").header_value(), token("old").header_value()]
        );
        assert!(rotated.admits(Some(&presented[0])));
        assert!(rotated.admits(Some(&presented[1])));
        assert!(!rotated.admits(Some(&HeaderValue::from_static("Bearer other"))));
        assert!(!rotated.admits(None));
        assert!(rotated.contains(&token("old")) && !rotated.contains(&token("other")));
        let fresh = PeerCredential::new(token("new"), None);
        assert_eq!(fresh.header_values().len(), 1);
        assert!(!fresh.admits(Some(&token("old").header_value())));
    }
}
