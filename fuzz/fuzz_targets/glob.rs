//! `auth/glob.rs` `matches` agrees with a dynamic-programming model of `*` globs; `*` matches
//! everything; a pattern without `*` matches exactly itself; `*T*` matches whatever contains T; a
//! pattern matches its own text (a `*` in the text is just a character to another `*`).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trellis_fuzz::glob_model;
use trellis_proxy::fuzzing::glob;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Map both to `*`, `a`, `b` (patterns) and `a`, `b` (texts), so that matches are common.
    few: bool,
    pattern: Vec<u8>,
    text: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let (pattern, text) = if input.few {
        (
            input
                .pattern
                .iter()
                .map(|b| b"*ab"[usize::from(*b % 3)])
                .collect(),
            input
                .text
                .iter()
                .map(|b| b"ab"[usize::from(*b % 2)])
                .collect(),
        )
    } else {
        (input.pattern, input.text)
    };
    let got = glob(&pattern, &text);
    // The model is quadratic: keep it to inputs it answers quickly.
    if pattern.len() * text.len() <= 1 << 16 {
        assert_eq!(
            got,
            glob_model(&pattern, &text),
            "{:?} ~ {:?}",
            String::from_utf8_lossy(&pattern),
            String::from_utf8_lossy(&text)
        );
    }
    assert!(glob(b"*", &text));
    assert!(glob(&pattern, &pattern), "a pattern does not match itself");
    if !pattern.contains(&b'*') {
        assert_eq!(got, pattern == text);
        let mut around = b"*".to_vec();
        around.extend_from_slice(&pattern);
        around.push(b'*');
        let contains = text
            .windows(pattern.len().max(1))
            .any(|w| w == pattern.as_slice())
            || pattern.is_empty();
        assert_eq!(glob(&around, &text), contains);
    }
});
