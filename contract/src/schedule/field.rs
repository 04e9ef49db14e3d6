//! Parsing of the five cron fields, following the rules of the cron parser that Kubernetes
//! CronJob uses (robfig/cron v3, standard parser).
//!
//! A field is a comma-separated list of items; an item is `*`, `?`, `N` or `N-M`, optionally
//! followed by `/STEP`. `N/STEP` means `N-max/STEP`. Months and weekdays also accept their
//! three-letter English names in any case. A field written as `*` or `?` (with no step, or a
//! step of 1) is *unrestricted*, which matters for the day-of-month / day-of-week rule.

use super::ScheduleError;

/// Which of the five fields is being parsed; names the field in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl FieldKind {
    /// The fields in the order they appear in an expression.
    pub(crate) const ALL: [FieldKind; 5] = [
        FieldKind::Minute,
        FieldKind::Hour,
        FieldKind::DayOfMonth,
        FieldKind::Month,
        FieldKind::DayOfWeek,
    ];

    /// Human name used in error messages shown to cluster admins.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FieldKind::Minute => "minute",
            FieldKind::Hour => "hour",
            FieldKind::DayOfMonth => "day-of-month",
            FieldKind::Month => "month",
            FieldKind::DayOfWeek => "day-of-week",
        }
    }

    fn bounds(self) -> (u32, u32) {
        match self {
            FieldKind::Minute => (0, 59),
            FieldKind::Hour => (0, 23),
            FieldKind::DayOfMonth => (1, 31),
            FieldKind::Month => (1, 12),
            FieldKind::DayOfWeek => (0, 6),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            FieldKind::Month => &[
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ],
            FieldKind::DayOfWeek => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
            _ => &[],
        }
    }

    /// The value of a name: months count from 1, weekdays from 0 (Sunday).
    fn value_of_name(self, text: &str) -> Option<u32> {
        let offset = if self == FieldKind::Month { 1 } else { 0 };
        let lower = text.to_ascii_lowercase();
        self.names()
            .iter()
            .position(|name| *name == lower)
            .and_then(|index| u32::try_from(index).ok())
            .map(|index| index + offset)
    }
}

/// The set of values a field allows, as a bit set, and whether it was written unrestricted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    bits: u64,
    /// Set when the field was `*` or `?` without a step above 1. Kubernetes ANDs day-of-month
    /// and day-of-week when either is unrestricted and ORs them otherwise.
    pub(crate) unrestricted: bool,
}

impl Field {
    pub(crate) fn contains(&self, value: u32) -> bool {
        value < 64 && self.bits & (1u64 << value) != 0
    }

    /// A field that allows exactly `value`; used by the `@hourly`-style macros.
    pub(crate) fn single(value: u32) -> Field {
        Field {
            bits: 1u64 << value,
            unrestricted: false,
        }
    }

    /// A field that allows every value of its kind and counts as unrestricted.
    pub(crate) fn every(kind: FieldKind) -> Field {
        let (min, max) = kind.bounds();
        Field {
            bits: range_bits(min, max, 1),
            unrestricted: true,
        }
    }

    /// Parses one field of an expression.
    pub(crate) fn parse(kind: FieldKind, text: &str) -> Result<Field, ScheduleError> {
        let mut field = Field {
            bits: 0,
            unrestricted: false,
        };
        // Like the Kubernetes parser, empty list items (`1,,2`) are ignored.
        for item in text.split(',').filter(|item| !item.is_empty()) {
            let parsed = parse_item(kind, item).map_err(|problem| ScheduleError::Field {
                field: kind.name(),
                text: text.to_string(),
                problem,
            })?;
            field.bits |= parsed.bits;
            field.unrestricted |= parsed.unrestricted;
        }
        if field.bits == 0 {
            return Err(ScheduleError::Field {
                field: kind.name(),
                text: text.to_string(),
                problem: "the field is empty".to_string(),
            });
        }
        Ok(field)
    }
}

fn range_bits(start: u32, end: u32, step: u32) -> u64 {
    (start..=end)
        .step_by(step as usize)
        .fold(0u64, |bits, value| bits | (1u64 << value))
}

/// Parses one list item (`*`, `5`, `1-5`, `*/15`, `MON-FRI`, `10/5`); the error is the
/// problem only, the caller adds which field and expression it was found in.
fn parse_item(kind: FieldKind, item: &str) -> Result<Field, String> {
    let (min, max) = kind.bounds();
    let mut parts = item.split('/');
    let range = parts.next().unwrap_or_default();
    let step_text = parts.next();
    if parts.next().is_some() {
        return Err(format!("\"{item}\" has more than one '/'"));
    }

    let (start, mut end, mut unrestricted) = if range == "*" || range == "?" {
        (min, max, true)
    } else {
        let mut bounds = range.split('-');
        let low = bounds.next().unwrap_or_default();
        let high = bounds.next();
        if bounds.next().is_some() {
            return Err(format!("\"{item}\" has more than one '-'"));
        }
        if low.is_empty() || high.is_some_and(str::is_empty) {
            return Err(format!("\"{item}\" needs a value on both sides of '-'"));
        }
        let start = parse_value(kind, low)?;
        let end = match high {
            Some(high) => parse_value(kind, high)?,
            None => start,
        };
        (start, end, false)
    };

    let step = match step_text {
        None => 1,
        Some(text) => {
            let step = parse_number(text)?;
            if step == 0 {
                return Err(format!("the step in \"{item}\" must be a positive number"));
            }
            // `N/STEP` runs from N to the end of the field's range.
            if !range.contains('-') {
                end = max;
            }
            if step > 1 {
                unrestricted = false;
            }
            step
        }
    };

    if start < min {
        return Err(format!(
            "value {start} is below the minimum {min} (allowed: {min}-{max})"
        ));
    }
    if end > max {
        return Err(format!(
            "value {end} is above the maximum {max} (allowed: {min}-{max})"
        ));
    }
    if start > end {
        return Err(format!(
            "the range \"{item}\" starts at {start}, after its end {end}; write the smaller value first"
        ));
    }
    // Steps larger than the field cannot select a second value; clamp to keep the arithmetic small.
    let step = step.min(max + 1);
    Ok(Field {
        bits: range_bits(start, end, step),
        unrestricted,
    })
}

fn parse_value(kind: FieldKind, text: &str) -> Result<u32, String> {
    if text == "*" || text == "?" {
        return Err(format!(
            "'{text}' cannot be part of a range; write \"{text}\" alone or a range like \"1-5\""
        ));
    }
    if let Some(value) = kind.value_of_name(text) {
        return Ok(value);
    }
    parse_number(text).map_err(|problem| {
        if kind.names().is_empty() {
            problem
        } else {
            format!(
                "{problem}, or one of the names {}",
                kind.names()
                    .iter()
                    .map(|n| n.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    })
}

fn parse_number(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if let Some(negative) = digits.strip_prefix('-')
        && !negative.is_empty()
        && negative.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("negative number \"{text}\" is not allowed"));
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("\"{text}\" is not a number"));
    }
    digits
        .parse::<u32>()
        .map_err(|_| format!("\"{text}\" is too large"))
}
