//! An entry's lifetime from a write request: `?ttl=` or `Expires`, else the default TTL,
//! never above the maximum TTL.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, header};

use super::error::ApiError;
use crate::base::time::Timestamp;
use crate::cache::{Lifetime, Limits};
use tidecache_contract::units::parse_duration;

/// The expiry a write asks for, resolved against the limits ([`Limits::expiry`]); `None`
/// means no expiry.
///
/// # Errors
/// A bad or zero `ttl`, a bad `Expires`, both at once, or a lifetime the limits refuse.
pub fn expiry(
    ttl: Option<&str>,
    headers: &HeaderMap,
    now: Timestamp,
    limits: &Limits,
) -> Result<Option<Timestamp>, ApiError> {
    let expires = headers.get(header::EXPIRES);
    let asked = match (ttl, expires) {
        (Some(_), Some(_)) => return Err(ApiError::TtlAndExpires),
        (Some(text), None) => Lifetime::For(ttl_from_text(text)?),
        (None, Some(value)) => {
            let bad = || ApiError::BadExpires {
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            let text = value.to_str().map_err(|_| bad())?;
            let at: SystemTime = httpdate::parse_http_date(text).map_err(|_| bad())?;
            Lifetime::Until(Timestamp::from_system_time(at).ok_or_else(bad)?)
        }
        (None, None) => Lifetime::Default,
    };
    Ok(limits.expiry(asked, now)?)
}

/// A `ttl` as sent: a positive duration.
///
/// # Errors
/// [`ApiError::BadTtl`].
pub fn ttl_from_text(text: &str) -> Result<Duration, ApiError> {
    parse_duration(text)
        .ok()
        .filter(|ttl| !ttl.is_zero())
        .ok_or_else(|| ApiError::BadTtl {
            value: text.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(784_111_777_000); // Sun, 06 Nov 1994 08:49:37 GMT

    fn limits(default: Option<u64>, max: Option<u64>) -> Limits {
        Limits {
            default_ttl: default.map(Duration::from_secs),
            max_ttl: max.map(Duration::from_secs),
            ..Limits::default()
        }
    }

    fn expires(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::EXPIRES, HeaderValue::from_static(value));
        headers
    }

    fn secs(s: i64) -> Option<Timestamp> {
        Some(Timestamp::from_millis(NOW.as_millis() + s * 1_000))
    }

    #[test]
    fn ttl_expires_default_and_max() {
        let none = HeaderMap::new();
        let open = limits(None, None);
        assert_eq!(expiry(Some("90s"), &none, NOW, &open), Ok(secs(90)));
        assert_eq!(expiry(Some("2h"), &none, NOW, &open), Ok(secs(7_200)));
        assert_eq!(expiry(None, &none, NOW, &open), Ok(None));
        assert_eq!(
            expiry(None, &none, NOW, &limits(Some(60), None)),
            Ok(secs(60))
        );
        let later = expires("Sun, 06 Nov 1994 08:50:37 GMT");
        assert_eq!(expiry(None, &later, NOW, &open), Ok(secs(60)));
        let capped = limits(None, Some(300));
        assert_eq!(expiry(Some("5m"), &none, NOW, &capped), Ok(secs(300)));
        assert_eq!(
            expiry(Some("301"), &none, NOW, &capped).map_err(|e| e.code()),
            Err("ttl_over_max")
        );
        assert_eq!(
            expiry(None, &none, NOW, &capped).map_err(|e| e.code()),
            Err("ttl_required")
        );
        assert_eq!(
            expiry(Some("999999999999"), &none, NOW, &open).map_err(|e| e.code()),
            Err("expiry_out_of_range"),
            "beyond 2262"
        );
    }

    #[test]
    fn refusals() {
        let open = limits(None, None);
        let none = HeaderMap::new();
        for bad in ["0", "", "1.5s", "-3", "3d"] {
            let error = expiry(Some(bad), &none, NOW, &open).expect_err(bad);
            assert_eq!(error.code(), "bad_ttl");
        }
        let code =
            |headers: &HeaderMap, ttl| expiry(ttl, headers, NOW, &open).map_err(|e| e.code());
        assert_eq!(code(&expires("tomorrow"), None), Err("bad_expires"));
        assert_eq!(
            code(&expires("Sun, 06 Nov 1994 08:49:37 GMT"), None),
            Err("expires_in_past")
        );
        assert_eq!(
            code(&expires("Sun, 06 Nov 1994 08:50:37 GMT"), Some("5s")),
            Err("ttl_and_expires")
        );
        assert_eq!(
            code(&expires("Fri, 11 Apr 2262 23:47:16 GMT"), None),
            Ok(Some(Timestamp::from_millis(9_223_372_036_000)))
        );
        for late in [
            "Fri, 11 Apr 2262 23:47:17 GMT",
            "Mon, 01 Jan 2300 00:00:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(
                code(&expires(late), None),
                Err("expiry_out_of_range"),
                "{late}"
            );
        }
    }
}
