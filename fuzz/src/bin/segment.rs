//! AFL++ target: `tidecache_fuzz::segment::check` (docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| tidecache_fuzz::segment::check(data));
}
