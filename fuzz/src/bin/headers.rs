//! AFL++ target: `tidecache_fuzz::headers::check` (docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| tidecache_fuzz::headers::check(data));
}
