//! The header parsers of the key API: `If-Match`/`If-None-Match` lists
//! (`cache_node::parsers::preconditions`) and a write's expiry from `Expires` or `?ttl=`
//! (`cache_node::parsers::expiry`). The first byte chooses the parser, the rest is the text.
//!
//! Properties:
//! - an ETag list that parses to versions parses to the same versions when written back as
//!   the server writes ETags (only `If-Match`, which compares strongly, may drop weak tags and
//!   be left with none); a refusal is `bad_precondition`;
//! - an accepted `Expires` is in the future, whole seconds, representable in the disk
//!   format's nanoseconds, and written back as an HTTP date it gives the same expiry; an
//!   `Expires` never yields "no expiry";
//! - an accepted `ttl` gives exactly now + the duration it spells, representable on disk, and
//!   the duration in its canonical spelling gives the same expiry.

use cache_node::parsers::{EtagMatch, expiry, preconditions};
use cache_node::{Limits, Timestamp};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tidecache_contract::units::{format_duration, parse_duration};

/// The request's "now": 2026-12-02T00:00:00Z, fixed so that a run is reproducible.
const NOW: Timestamp = Timestamp::from_millis(1_796_169_600_000);

/// The check.
pub fn check(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => etag_lists(text),
        1 => expires(text),
        _ => ttl(text),
    }
}

/// Each line of `text` is one field value of `If-Match`, and of `If-None-Match`.
fn etag_lists(text: &[u8]) {
    for name in [header::IF_MATCH, header::IF_NONE_MATCH] {
        let mut headers = HeaderMap::new();
        for line in text.split(|b| *b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(name.clone(), value);
            }
        }
        let parsed = match preconditions(&headers) {
            Ok(parsed) => parsed,
            Err(error) => {
                assert_eq!(error.code(), "bad_precondition", "{error}");
                continue;
            }
        };
        let condition = if name == header::IF_MATCH {
            parsed.if_match
        } else {
            parsed.if_none_match
        };
        match condition {
            None => assert!(headers.is_empty(), "a {name} header was ignored"),
            Some(EtagMatch::Any) => {}
            Some(EtagMatch::Versions(versions)) => {
                if versions.is_empty() {
                    // Weak tags alone under If-Match's strong comparison: a condition that
                    // never holds. Under If-None-Match's weak comparison they all count.
                    assert_eq!(name, header::IF_MATCH, "a list of ETags yielded none");
                    continue;
                }
                let written = versions
                    .iter()
                    .map(|version| format!("\"{version}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                let again = preconditions(&single(name.clone(), &written))
                    .unwrap_or_else(|error| panic!("{written:?} written back is refused: {error}"));
                let again = if name == header::IF_MATCH {
                    again.if_match
                } else {
                    again.if_none_match
                };
                assert_eq!(again, Some(EtagMatch::Versions(versions)), "{written:?}");
            }
        }
    }
}

/// `text` as the `Expires` header of a write.
fn expires(text: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(text) else {
        return;
    };
    let headers = single_value(header::EXPIRES, value);
    let Ok(at) = expiry(None, &headers, NOW, &Limits::default()) else {
        return;
    };
    let at = at.expect("an Expires header yielded no expiry");
    assert!(at > NOW, "an expiry in the past was accepted: {at:?}");
    assert_eq!(at.as_millis() % 1_000, 0, "an HTTP date has whole seconds");
    assert!(
        at.to_unix_nanos().is_some(),
        "an accepted expiry {at:?} does not fit the disk format's nanoseconds"
    );
    let written = httpdate::fmt_http_date(at.to_system_time());
    let again = expiry(
        None,
        &single(header::EXPIRES, &written),
        NOW,
        &Limits::default(),
    );
    assert_eq!(again, Ok(Some(at)), "{written:?}");
}

/// `text` as the `ttl` parameter of a write.
fn ttl(text: &[u8]) {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let none = HeaderMap::new();
    let Ok(at) = expiry(Some(text), &none, NOW, &Limits::default()) else {
        return;
    };
    let at = at.expect("a ttl yielded no expiry");
    let spelled = parse_duration(text).expect("an accepted ttl is a duration");
    assert_eq!(
        Some(at),
        NOW.checked_add(spelled),
        "ttl {text:?} is not now + {spelled:?}"
    );
    assert!(
        at.to_unix_nanos().is_some(),
        "an accepted expiry {at:?} does not fit the disk format's nanoseconds"
    );
    let canonical = format_duration(spelled);
    assert_eq!(
        expiry(Some(&canonical), &none, NOW, &Limits::default()),
        Ok(Some(at)),
        "{text:?} and its canonical spelling {canonical:?} differ"
    );
}

fn single(name: HeaderName, text: &str) -> HeaderMap {
    let value = HeaderValue::from_str(text).expect("the server's own header text is valid");
    single_value(name, value)
}

fn single_value(name: HeaderName, value: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name, value);
    headers
}
