//! AFL++ target: `tidecache_fuzz::resp::check` (docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| tidecache_fuzz::resp::check(data));
}
