//! A bucket: every entry whose expiry falls in `(previous fire time, fire time]` of the
//! schedule. It is identified by its fire time and stored on the shared volume as one
//! directory named by that time in UTC, `YYYYMMDDTHHMMSSZ`, so names sort as text in time
//! order and mean the same whatever the schedule's time zone.

use std::fmt;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

/// The `strftime` pattern of a bucket directory name.
const NAME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// The length of every bucket directory name.
const NAME_LEN: usize = 16;

/// A bucket, identified by its fire time (a whole second between years 0 and 9999, so that its
/// name has a fixed width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket(DateTime<Utc>);

impl Bucket {
    /// The bucket that ends at `fire_time`; `None` if the instant has a fraction of a second or
    /// lies outside years 0..=9999, where names would not sort.
    pub fn new(fire_time: DateTime<Utc>) -> Option<Bucket> {
        let name = fire_time.format(NAME_FORMAT).to_string();
        (name.len() == NAME_LEN && fire_time.timestamp_subsec_nanos() == 0)
            .then_some(Bucket(fire_time))
    }

    /// The fire time that ends this bucket.
    pub fn fire_time(&self) -> DateTime<Utc> {
        self.0
    }

    /// The directory name, e.g. `20261123T140500Z`.
    pub fn dir_name(&self) -> String {
        self.0.format(NAME_FORMAT).to_string()
    }

    /// Parses a directory name back into a bucket. Anything that is not exactly a name
    /// [`Bucket::dir_name`] would produce is `None`: "not ours", never to be touched.
    pub fn from_dir_name(name: &str) -> Option<Bucket> {
        let bytes = name.as_bytes();
        let shape_ok = bytes.len() == NAME_LEN
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 => *b == b'T',
                15 => *b == b'Z',
                _ => b.is_ascii_digit(),
            });
        if !shape_ok {
            return None;
        }
        let parsed = NaiveDateTime::parse_from_str(name, NAME_FORMAT)
            .ok()?
            .and_utc();
        let bucket = Bucket::new(parsed)?;
        (bucket.dir_name() == name).then_some(bucket)
    }

    /// Whether everything in this bucket is expired at `now`, allowing `grace` for clock skew
    /// between the node that wrote it and the one deciding.
    pub fn is_expired(&self, now: DateTime<Utc>, grace: Duration) -> bool {
        is_bucket_expired(self.0, now, grace)
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dir_name())
    }
}

/// Whether a bucket ending at `fire_time` is expired at `now` with a clock-skew `grace`: its
/// fire time is at or before `now - grace`. With zero grace this is the moment cache-node
/// evicts it; the janitor passes a positive grace so that a node whose clock runs behind still
/// finds its files.
pub fn is_bucket_expired(fire_time: DateTime<Utc>, now: DateTime<Utc>, grace: Duration) -> bool {
    match now.checked_sub_signed(grace) {
        Some(cutoff) => fire_time <= cutoff,
        None => false,
    }
}
