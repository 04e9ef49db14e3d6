//! Glob patterns as `KEYS`, `SCAN ... MATCH` and `CONFIG GET` read them (Redis'
//! `stringmatchlen`): `*` any run, `?` any byte, `[abc]`, `[^abc]`, `[a-z]` sets, `\x` the
//! byte `x`.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point, the last `*`: linear in practice and never
    // exponential, unlike the recursive matcher.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    let (matched, next) = class(pattern, p, text[t]);
                    if matched {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                byte => {
                    if byte == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((star_p, star_t)) => {
                p = star_p;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether `byte` is in the `[...]` set starting at `pattern[open]`, and where the pattern
/// goes on after it. An unclosed set runs to the end of the pattern, as in Redis.
fn class(pattern: &[u8], open: usize, byte: u8) -> (bool, usize) {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(i) {
            None => return (matched != negate, i),
            Some(b']') => return (matched != negate, i + 1),
            Some(b'\\') if i + 1 < pattern.len() => {
                matched |= pattern[i + 1] == byte;
                i += 2;
            }
            Some(&low) if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() => {
                let high = pattern[i + 2];
                let (low, high) = if low <= high {
                    (low, high)
                } else {
                    (high, low)
                };
                matched |= (low..=high).contains(&byte);
                i += 3;
            }
            Some(&single) => {
                matched |= single == byte;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The recursive definition, as a reference for the iterative matcher.
    fn reference(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.first() {
            None => text.is_empty(),
            Some(b'*') => (0..=text.len()).any(|skip| reference(&pattern[1..], &text[skip..])),
            Some(_) if text.is_empty() => false,
            Some(b'?') => reference(&pattern[1..], &text[1..]),
            Some(b'[') => match class(pattern, 0, text[0]) {
                (true, next) => reference(&pattern[next..], &text[1..]),
                _ => false,
            },
            Some(b'\\') if pattern.len() > 1 => {
                pattern[1] == text[0] && reference(&pattern[2..], &text[1..])
            }
            Some(&byte) => byte == text[0] && reference(&pattern[1..], &text[1..]),
        }
    }

    #[test]
    fn redis_examples() {
        for (pattern, text, expected) in [
            ("h?llo", "hello", true),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("*", "", true),
            ("user:*", "user:1", true),
            ("user:*", "session:1", false),
            ("*:*:x", "a:b:c:x", true),
            ("max*", "maxmemory-policy", true),
        ] {
            assert_eq!(
                matches(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} {text}"
            );
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_recursive_definition(
            pattern in "[ab*?\\[\\]^\\\\-]{0,8}",
            text in "[ab*-]{0,8}",
        ) {
            prop_assert_eq!(matches(pattern.as_bytes(), text.as_bytes()), reference(pattern.as_bytes(), text.as_bytes()));
        }
    }
}
