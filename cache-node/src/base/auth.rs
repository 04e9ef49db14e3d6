//! The cluster's bearer token (contract 3): one shared secret per cluster, from the Secret
//! `spec.auth` names. Clients present it on key routes and peers on internal routes; the
//! HTTP layer checks it, replication presents it.

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

    /// Whether an `Authorization` header carries this token, compared in constant time.
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(presented) = authorization
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
        else {
            return false;
        };
        bool::from(presented.trim().as_bytes().ct_eq(self.0.as_bytes()))
    }

    /// Whether a password given in a protocol's own login command (RESP `AUTH`, `HELLO ...
    /// AUTH`) is this token, compared in constant time.
    pub fn admits_password(&self, password: &[u8]) -> bool {
        bool::from(password.ct_eq(self.0.as_bytes()))
    }
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
        assert!(!token.admits(Some(&HeaderValue::from_static("Bearer s3cre"))));
        assert!(!token.admits(Some(&HeaderValue::from_static("Basic s3cret"))));
        assert!(!token.admits(None));
        assert!(token.admits_password(b"s3cret"));
        assert!(!token.admits_password(b"s3cret "));
    }
}
