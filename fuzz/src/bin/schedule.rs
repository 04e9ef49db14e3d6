//! AFL++ target: `tidecache_fuzz::schedule::check` (docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| tidecache_fuzz::schedule::check(data));
}
