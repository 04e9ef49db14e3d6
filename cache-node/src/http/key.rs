//! Keys in URLs: `/v1/keys/{key}` where the key is any bytes, percent-encoded as needed. The
//! path is decoded here rather than by the router so that keys need not be UTF-8 and a `%2F`
//! is part of the key, never a path separator.

use bytes::Bytes;

use super::error::ApiError;

/// The path prefix of single-key routes.
pub const PREFIX: &str = "/v1/keys/";

/// The key named by a request path under [`PREFIX`], percent-decoded and checked against
/// `1..=max` bytes.
///
/// # Errors
/// [`ApiError::EmptyKey`], [`ApiError::KeyTooLong`] or [`ApiError::KeyEncoding`].
pub fn from_path(path: &str, max: usize) -> Result<Bytes, ApiError> {
    let encoded = path.strip_prefix(PREFIX).unwrap_or_default();
    let key = percent_decode(encoded)?;
    check(&key, max)?;
    Ok(Bytes::from(key))
}

/// Checks a decoded key's length.
///
/// # Errors
/// [`ApiError::EmptyKey`] or [`ApiError::KeyTooLong`].
pub fn check(key: &[u8], max: usize) -> Result<(), ApiError> {
    match key.len() {
        0 => Err(ApiError::EmptyKey { max }),
        len if len > max => Err(ApiError::KeyTooLong { len, max }),
        _ => Ok(()),
    }
}

fn percent_decode(encoded: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = |offset: usize| {
                bytes
                    .get(at + offset)
                    .and_then(|b| (*b as char).to_digit(16))
            };
            match (hex(1), hex(2)) {
                (Some(high), Some(low)) => decoded.push((high * 16 + low) as u8),
                _ => return Err(ApiError::KeyEncoding { at }),
            }
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_any_bytes_and_checks_length() {
        assert_eq!(
            from_path("/v1/keys/a%2Fb", 8),
            Ok(Bytes::from_static(b"a/b"))
        );
        assert_eq!(
            from_path("/v1/keys/%ff%00", 8),
            Ok(Bytes::from_static(b"\xff\x00"))
        );
        assert_eq!(from_path("/v1/keys/caf%C3%A9", 8), Ok(Bytes::from("café")));
        assert_eq!(
            from_path("/v1/keys/", 8),
            Err(ApiError::EmptyKey { max: 8 })
        );
        assert_eq!(
            from_path("/v1/keys/%41%41%41", 2),
            Err(ApiError::KeyTooLong { len: 3, max: 2 })
        );
        assert_eq!(
            from_path("/v1/keys/a%zz", 8),
            Err(ApiError::KeyEncoding { at: 1 })
        );
        assert_eq!(
            from_path("/v1/keys/a%4", 8),
            Err(ApiError::KeyEncoding { at: 1 })
        );
    }
}
