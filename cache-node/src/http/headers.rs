//! The HTTP headers of the key API: `ETag` from versions, `If-Match`/`If-None-Match` into
//! preconditions, and the expiry headers (`Expires`, `Tidecache-Ttl`, `Tidecache-Bucket`).

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::error::ApiError;
use crate::base::time::Timestamp;
use crate::base::version::Version;
use crate::store::{EtagMatch, Preconditions};

/// Remaining lifetime in whole seconds (rounded down), for clients that would rather not
/// compare `Expires` with their own clock.
pub const TTL: HeaderName = HeaderName::from_static("tidecache-ttl");
/// The expiry bucket an entry was filed under (its fire time, as a bucket directory name),
/// so an operator can tell which sweep and which janitor run will remove it.
pub const BUCKET: HeaderName = HeaderName::from_static("tidecache-bucket");

/// The strong ETag of a version: the version number in quotes.
pub fn etag(version: Version) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// An instant as an HTTP date (second resolution, rounded down, so a client never believes
/// an entry lives longer than it does).
pub fn http_date(instant: Timestamp) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(instant.to_system_time()))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// Adds `Expires` and `Tidecache-Ttl` for an entry expiring at `expires_at` (nothing for an
/// entry without expiry).
pub fn insert_expiry(headers: &mut HeaderMap, expires_at: Option<Timestamp>, now: Timestamp) {
    if let Some(expiry) = expires_at {
        headers.insert(header::EXPIRES, http_date(expiry));
        headers.insert(TTL, HeaderValue::from(now.until(expiry).as_secs()));
    }
}

/// How a condition compares entity tags (RFC 9110 §8.8.3.2). Every ETag this server issues is
/// strong, so the two differ only on a weak tag a client sends: `W/"x"` matches `"x"` under
/// weak comparison and nothing under strong comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// The preconditions a request carries. `If-Match` compares strongly (RFC 9110 §13.1.1), so
/// a weak tag in it never matches; `If-None-Match` compares weakly (§13.1.2), so a weak tag
/// matches its strong version: a client revalidating a weak tag a cache in between made from
/// ours gets 304.
///
/// # Errors
/// [`ApiError::BadPrecondition`] when a header is not `*` or a list of ETags (strong or weak)
/// this server could have issued.
pub fn preconditions(headers: &HeaderMap) -> Result<Preconditions, ApiError> {
    Ok(Preconditions {
        if_match: etag_match(headers, header::IF_MATCH, "If-Match", Comparison::Strong)?,
        if_none_match: etag_match(
            headers,
            header::IF_NONE_MATCH,
            "If-None-Match",
            Comparison::Weak,
        )?,
    })
}

fn etag_match(
    headers: &HeaderMap,
    name: HeaderName,
    label: &'static str,
    comparison: Comparison,
) -> Result<Option<EtagMatch>, ApiError> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for value in values {
        let bad = |problem| ApiError::BadPrecondition {
            header: label,
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            problem,
        };
        let text = value.to_str().map_err(|_| bad("it is not ASCII"))?;
        for tag in text.split(',').map(str::trim) {
            if tag == "*" {
                return Ok(Some(EtagMatch::Any));
            }
            // The weak indicator is case-sensitive (RFC 9110 §8.8.3).
            let (weak, quoted) = match tag.strip_prefix("W/") {
                Some(quoted) => (true, quoted),
                None => (false, tag),
            };
            let inner = quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(|| bad("ETags must be in double quotes"))?;
            let version = inner
                .parse::<Version>()
                .map_err(|_| bad("it is not an ETag issued by tidecache"))?;
            // Under strong comparison a weak tag matches nothing: it is dropped, and a list
            // of weak tags alone is a condition that never holds.
            if !(weak && comparison == Comparison::Strong) {
                versions.push(version);
            }
        }
    }
    Ok(Some(EtagMatch::Versions(versions)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.append(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn parses_star_lists_and_refuses_the_rest() {
        assert_eq!(preconditions(&HeaderMap::new()), Ok(Preconditions::none()));
        assert_eq!(
            preconditions(&with(header::IF_NONE_MATCH, "*")),
            Ok(Preconditions::create_only())
        );
        let list = preconditions(&with(header::IF_MATCH, "\"1\", \"22\"")).expect("valid");
        assert_eq!(
            list.if_match,
            Some(EtagMatch::Versions(vec![Version::new(1), Version::new(22)]))
        );
        for bad in ["1", "W/1", "w/\"1\"", "W/\"abc\"", "\"abc\"", "\"1", ""] {
            let error = preconditions(&with(header::IF_MATCH, bad)).expect_err(bad);
            assert_eq!(error.code(), "bad_precondition");
            let error = preconditions(&with(header::IF_NONE_MATCH, bad)).expect_err(bad);
            assert_eq!(error.code(), "bad_precondition");
        }
    }

    #[test]
    fn weak_tags_match_only_under_weak_comparison() {
        let weak = preconditions(&with(header::IF_NONE_MATCH, "W/\"7\", \"8\"")).expect("valid");
        assert_eq!(
            weak.if_none_match,
            Some(EtagMatch::Versions(vec![Version::new(7), Version::new(8)]))
        );
        let strong = preconditions(&with(header::IF_MATCH, "W/\"7\", \"8\"")).expect("valid");
        assert_eq!(
            strong.if_match,
            Some(EtagMatch::Versions(vec![Version::new(8)]))
        );
        let never = preconditions(&with(header::IF_MATCH, "W/\"7\"")).expect("valid");
        assert!(!never.hold(Some(Version::new(7))));
        assert!(!never.hold(None));
    }

    #[test]
    fn formats_etags_and_dates() {
        assert_eq!(etag(Version::new(42)), "\"42\"");
        assert_eq!(
            http_date(Timestamp::from_millis(784_111_777_999)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
