//! Whatever the file holds, `parse` returns: a config or diagnostics, never a panic.

use std::panic;
use std::path::Path;

const DESIGN: &str = include_str!("data/design.toml");

fn check(text: &str) {
    let result = panic::catch_unwind(|| {
        let _ = trellis_config::parse(text, Path::new("config.toml"));
    });
    assert!(result.is_ok(), "parse panicked on:\n{text}");
}

/// A small deterministic generator (xorshift): no dependency, same cases every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn truncations() {
    for (i, _) in DESIGN.char_indices() {
        check(&DESIGN[..i]);
    }
}

#[test]
fn dropped_and_doubled_lines() {
    let lines: Vec<&str> = DESIGN.lines().collect();
    for i in 0..lines.len() {
        let mut v = lines.clone();
        v.remove(i);
        check(&v.join("\n"));
        let mut v = lines.clone();
        v.insert(i, lines[i]);
        check(&v.join("\n"));
    }
}

#[test]
fn random_mutations() {
    const TOKENS: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        "=",
        ",",
        ".",
        "\n",
        "#",
        "0",
        "-1",
        "99999999999999999999",
        "1e400",
        "nan",
        "inf",
        "true",
        "[[",
        "]]",
        "\"\"",
        "[]",
        "{}",
        "é",
        "\u{0}",
        "*",
        "/",
        ":",
        "-",
        "0x10",
        "1979-05-27",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let chars: Vec<char> = DESIGN.chars().collect();
    for _ in 0..3000 {
        let mut text: Vec<char> = chars.clone();
        for _ in 0..1 + rng.below(4) {
            let pos = rng.below(text.len());
            let token: Vec<char> = TOKENS[rng.below(TOKENS.len())].chars().collect();
            match rng.below(3) {
                0 => {
                    text.splice(pos..pos, token);
                }
                1 => {
                    let end = (pos + token.len()).min(text.len());
                    text.splice(pos..end, token);
                }
                _ => {
                    let end = (pos + 1 + rng.below(20)).min(text.len());
                    text.drain(pos..end);
                }
            }
        }
        check(&text.into_iter().collect::<String>());
    }
}

#[test]
fn hand_written_garbage() {
    let deep = format!("x = {}{}", "[".repeat(5000), "]".repeat(5000));
    let cases = [
        "",
        "\u{feff}",
        "\0\0\0",
        "[[[[[[",
        deep.as_str(),
        "service = 5",
        "service = [1, 2]",
        "service = []",
        "[[service]]\n[[service.listener.rule]]\nname = \"r\"",
        "[[service]]\nlistener = 3",
        "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n[[service.listener]]\nport = 99999999999999999999",
        "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n[[service.listener]]\nport = -9223372036854775808",
        "[[target_group]]\nname = \"t\"\ntargets = [[], {}, 5, \"\"]",
        "[[target_group]]\nname = \"t\"\n[target_group.health_check]\ninterval = \"99999999999999999999999s\"\ntimeout = \"1ns\"",
        "[[scaling_group]]\nname = \"g\"\nmin = -1\nmax = 9223372036854775807\ndesired = -9223372036854775808",
        "[[scaling_group]]\nname = \"g\"\n[scaling_group.launch]\nprovider = \"process\"\nports = \"65535-1\"",
        "[[scaling_group]]\n[[scaling_group.policy]]\ntype = \"step\"\nsteps = [{ lower = nan, upper = inf, adjustment = 1 }, { lower = -inf }]",
        "[[scaling_group]]\n[[scaling_group.policy]]\ntype = \"scheduled\"\ncron = \"*/99999999999 - , ,, * *\"\ntimezone = \"/\"",
        "[admin]\nlisten = \"[::]:0\"\ntoken_file = \"\"",
        "[limits]\nheader_timeout = \"\"\nmax_header_bytes = 1.5",
        "a.b.c.d = 1\n[a]\n",
        "\"service\" = { name = 1 }",
    ];
    for c in cases {
        check(c);
    }
}
