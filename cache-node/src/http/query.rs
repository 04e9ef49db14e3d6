//! The query string of a request. Each route takes a fixed set of parameters, each at most
//! once; any other name is refused rather than ignored, so that a misspelt parameter (`?TTL=5`,
//! `?expires=`) cannot silently store an entry that never expires.

use super::error::ApiError;

/// The value of each of `accepted` in `query`, in the order of `accepted` (`None` where
/// absent). Names and values are decoded as HTML forms encode them (percent-escapes, `+` for
/// a space); names compare exactly, as everywhere in the API. An empty query (`?`, `?&`) has no
/// parameters.
///
/// # Errors
/// [`ApiError::UnknownParameter`] for a name not in `accepted`, [`ApiError::RepeatedParameter`]
/// for one given twice.
pub fn parse<const N: usize>(
    query: Option<&str>,
    accepted: &'static [&'static str; N],
) -> Result<[Option<String>; N], ApiError> {
    let mut values = [const { None }; N];
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let Some(slot) = accepted.iter().position(|known| *known == name) else {
            return Err(ApiError::UnknownParameter {
                name: name.into_owned(),
                accepted,
            });
        };
        if values[slot].is_some() {
            return Err(ApiError::RepeatedParameter {
                name: accepted[slot],
            });
        }
        values[slot] = Some(value.into_owned());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_the_accepted_names_once() {
        assert_eq!(parse(None, &["ttl"]), Ok([None]));
        assert_eq!(parse(Some(""), &["ttl"]), Ok([None]));
        assert_eq!(parse(Some("&&"), &[]), Ok([]));
        assert_eq!(
            parse(Some("ttl=90s"), &["ttl"]),
            Ok([Some("90s".to_string())])
        );
        assert_eq!(parse(Some("ttl"), &["ttl"]), Ok([Some(String::new())]));
        assert_eq!(
            parse(Some("t%74l=9%30s"), &["ttl"]),
            Ok([Some("90s".to_string())]),
            "percent-escapes decode"
        );
        for (query, name) in [("TTL=5", "TTL"), ("ttl=5&x", "x"), ("tt%4C=1", "ttL")] {
            assert_eq!(
                parse(Some(query), &["ttl"]),
                Err(ApiError::UnknownParameter {
                    name: name.to_string(),
                    accepted: &["ttl"]
                }),
                "{query}"
            );
        }
        assert_eq!(
            parse(Some("ttl=1&ttl=1"), &["ttl"]),
            Err(ApiError::RepeatedParameter { name: "ttl" })
        );
        assert!(parse(Some("ttl=5"), &[]).is_err());
    }
}
