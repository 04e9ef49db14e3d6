//! The names contract 2 puts on the shared volume, each parsed strictly so that a name is
//! either exactly one the format produces or "not ours". Nothing a client sends (keys, values)
//! ever becomes part of a name.

use std::fmt;

use crate::Bucket;

/// The directory of entries without expiry. It is compacted by cache-node, never swept by the
/// janitor, and cannot be mistaken for a bucket (bucket names are digits around a `T`).
pub const PERSISTENT_DIR: &str = "persistent";

/// The file-name suffix of a segment.
const SEGMENT_SUFFIX: &str = ".seg";
/// The number of decimal digits of a segment number, enough for any `u64`, so that names sort
/// as text in numeric order.
const SEGMENT_DIGITS: usize = 20;
/// The longest Kubernetes object name (a DNS-1123 subdomain).
const MAX_NAME_LEN: usize = 253;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "\"{name}\" is not a valid name: {reason} (use a Kubernetes object name: lowercase letters, \
     digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)"
)]
pub struct NameError {
    /// The name as given (lossily shown if it was not UTF-8).
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A Kubernetes object name (DNS-1123 subdomain): a namespace, a CacheCluster or a node (pod)
/// name. It is used as one path component, so the rules matter: no `/`, never `.` or `..`,
/// no NUL, bounded length.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`NameError`] saying which rule it breaks.
    pub fn new(name: &str) -> Result<ObjectName, NameError> {
        let fail = |reason| {
            Err(NameError {
                name: name.to_string(),
                reason,
            })
        };
        if name.is_empty() {
            return fail("it is empty");
        }
        if name.len() > MAX_NAME_LEN {
            return fail("it is longer than 253 characters");
        }
        for label in name.split('.') {
            let bytes = label.as_bytes();
            let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
                return fail("it has an empty part between dots");
            };
            if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
                return fail("a part does not start and end with a letter or digit");
            }
            let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
            if !bytes.iter().all(allowed) {
                return fail("it has a character other than a-z, 0-9, '-' and '.'");
            }
        }
        Ok(ObjectName(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stable 64-bit tag of the name (FNV-1a), for the node half of a
    /// [`Version`](super::Version): it breaks ties between two nodes' writes with the same
    /// clock value in the same way on every node.
    pub fn tag(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        self.0
            .bytes()
            .fold(OFFSET, |hash, b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A top-level area under the cluster root: one expiry bucket, or the persistent area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// Entries expiring within the bucket; the whole directory is deleted once it expires.
    Bucket(Bucket),
    /// Entries without expiry; compacted, never swept.
    Persistent,
}

impl Area {
    /// The directory name of the area.
    pub fn dir_name(&self) -> String {
        match self {
            Area::Bucket(bucket) => bucket.dir_name(),
            Area::Persistent => PERSISTENT_DIR.to_string(),
        }
    }

    /// Parses a directory name; `None` for anything the format does not produce.
    pub fn from_dir_name(name: &str) -> Option<Area> {
        if name == PERSISTENT_DIR {
            return Some(Area::Persistent);
        }
        Bucket::from_dir_name(name).map(Area::Bucket)
    }
}

/// The number of a segment within one node's directory of one area. A writer always starts a
/// new segment after the highest existing one, so it never appends behind a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

impl SegmentId {
    /// The file name, e.g. `00000000000000000007.seg`.
    pub fn file_name(&self) -> String {
        format!("{:0width$}{SEGMENT_SUFFIX}", self.0, width = SEGMENT_DIGITS)
    }

    /// Parses a file name; `None` unless it is exactly what [`SegmentId::file_name`] produces.
    pub fn from_file_name(name: &str) -> Option<SegmentId> {
        let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
        if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(SegmentId)
    }

    /// The segment after this one.
    pub fn next(&self) -> SegmentId {
        SegmentId(self.0.saturating_add(1))
    }
}
