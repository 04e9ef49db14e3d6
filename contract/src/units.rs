//! The textual units people type: durations (`90s`, `15m`, `2h`, plain seconds) for TTLs,
//! grace periods and timeouts, and byte sizes (`512MiB`, `1GB`, Kubernetes' `2Gi`, plain
//! bytes) for limits. One parser each, shared by cache-node (flags and the HTTP API), the
//! janitor (`--grace`) and the operator (which validates `spec` values it hands to both), so
//! that a value one accepts the others accept too.

use std::time::Duration;

/// Why a duration or size was refused; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration.
    #[error(
        "\"{0}\" is not a duration; write a whole number of seconds, or a number with the unit \
         s, m or h (e.g. 90s, 15m, 2h)"
    )]
    Duration(String),
    /// Not a byte size.
    #[error(
        "\"{0}\" is not a size; write a whole number of bytes, or a number with a unit such as \
         KiB, MiB, GiB, KB, MB or GB (e.g. 512MiB)"
    )]
    Size(String),
}

/// Parses `90s`, `15m`, `2h` or a plain number of seconds.
///
/// # Errors
/// [`UnitError::Duration`] for anything else, including overflow.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let error = || UnitError::Duration(text.to_string());
    let (digits, unit_secs) = match text.as_bytes().last() {
        Some(b's') => (&text[..text.len() - 1], 1),
        Some(b'm') => (&text[..text.len() - 1], 60),
        Some(b'h') => (&text[..text.len() - 1], 3_600),
        _ => (text, 1),
    };
    let count = parse_digits(digits).ok_or_else(error)?;
    count
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(error)
}

/// Writes a duration as [`parse_duration`] reads it, in the largest unit that divides it
/// exactly (`2h`, `15m`, `90s`, `0s`), so that a value written in its natural unit keeps its
/// spelling on the command lines the operator renders. Fractions of a second are dropped:
/// no flag takes them.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds != 0 && seconds.is_multiple_of(3_600) {
        format!("{}h", seconds / 3_600)
    } else if seconds != 0 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// Parses a byte size: plain bytes, or a number with a binary (`KiB`…`EiB`, and Kubernetes'
/// `Ki`…`Ei`) or decimal (`KB`…`EB`, and Kubernetes' `k`, `M`, `G`, `T`, `P`, `E`) unit.
///
/// # Errors
/// [`UnitError::Size`] for anything else, including overflow.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let error = || UnitError::Size(text.to_string());
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "TiB" | "Ti" => 1 << 40,
        "PiB" | "Pi" => 1 << 50,
        "EiB" | "Ei" => 1 << 60,
        "KB" | "kB" | "k" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        "TB" | "T" => 1_000_000_000_000,
        "PB" | "P" => 1_000_000_000_000_000,
        "EB" | "E" => 1_000_000_000_000_000_000,
        _ => return Err(error()),
    };
    parse_digits(digits)
        .and_then(|count| count.checked_mul(multiplier))
        .ok_or_else(error)
}

/// A non-empty run of ASCII digits as a number (no sign, no spaces).
fn parse_digits(digits: &str) -> Option<u64> {
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "-5",
            "1.5h",
            "2d",
            " 5",
            "5 s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn durations_are_formatted_in_their_largest_exact_unit() {
        for (seconds, text) in [
            (0, "0s"),
            (45, "45s"),
            (60, "1m"),
            (90, "90s"),
            (900, "15m"),
            (5_400, "90m"),
            (7_200, "2h"),
            (86_400, "24h"),
        ] {
            assert_eq!(format_duration(Duration::from_secs(seconds)), text);
        }
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s");
    }

    proptest::proptest! {
        #[test]
        fn formatted_durations_parse_back(seconds in 0u64..=u64::MAX / 3_600) {
            let duration = Duration::from_secs(seconds);
            proptest::prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_size("1Pi"), Ok(1 << 50));
        assert_eq!(parse_size("2E"), Ok(2_000_000_000_000_000_000));
        for bad in [
            "",
            "MiB",
            "1.5GiB",
            "-1",
            "1 parsec",
            "99999999999999TiB",
            "16Ei",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
