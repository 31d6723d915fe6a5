//! The command line itself: shell completions that the shells accept and complete with, and manual
//! pages that groff renders without a warning.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::tools;
use crate::support::trellis::bin;

/// Every subcommand, as `trellis --help` lists them (`help` aside).
fn subcommands() -> Vec<String> {
    let help = run(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// `trellis ARGS`, which must succeed; its stdout.
fn run(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run trellis");
    assert_success(&out, &format!("trellis {}", args.join(" ")));
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What bash's programmable completion offers for `line` (the cursor at its end), with the script
/// `trellis completions bash` printed.
fn bash_completes(script: &Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let program = format!(
        "source {script}\n\
         COMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT={point}\n\
         _trellis trellis '{current}' '{previous}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = script.display(),
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        point = line.len(),
        current = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("bash");
    assert_success(&out, "bash completion");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("trellis.bash");
    std::fs::write(&script, run(&["completions", "bash"])).expect("write");

    let mut all = bash_completes(&script, "trellis ");
    all.retain(|w| !w.starts_with('-'));
    let mut expected = subcommands();
    expected.push("help".into());
    all.sort();
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(
        bash_completes(&script, "trellis he"),
        ["healthcheck", "help"]
    );
    assert_eq!(
        bash_completes(&script, "trellis run --sh"),
        ["--shutdown-grace"]
    );
    assert_eq!(bash_completes(&script, "trellis targets re"), ["register"]);
    assert_eq!(bash_completes(&script, "trellis completions f"), ["fish"]);
}

#[test]
fn zsh_and_fish_accept_their_completion_scripts() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (shell, package, check) in [
        ("zsh", "zsh", &["-n"][..]),
        ("fish", "fish", &["--no-execute"][..]),
    ] {
        let Some(program) = tools::required(&[shell], package, "its completion script") else {
            continue;
        };
        let script = dir.path().join(format!("trellis.{shell}"));
        let text = run(&["completions", shell]);
        for sub in subcommands() {
            assert!(text.contains(&sub), "{shell} completion lacks {sub}");
        }
        std::fs::write(&script, text).expect("write");
        let out = Command::new(program)
            .args(check)
            .arg(&script)
            .output()
            .expect("shell");
        assert_success(&out, &format!("{shell} {}", check.join(" ")));
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// groff's warnings (`-ww`) for a page, and its text.
fn groff(page: &Path) -> (String, String) {
    let out = Command::new("groff")
        // Plain text: no bold or underline by overstriking (grotty -c -b -o -u).
        .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
        .arg(page)
        .output()
        .expect("groff");
    assert_success(&out, "groff");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_manual_has_a_page_per_command_that_groff_renders_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("trellis.1");
    std::fs::write(&page, run(&["man"])).expect("write");
    run(&["man", "--out-dir", dir.path().join("all").to_str().unwrap()]);

    let mut pages: Vec<String> = std::fs::read_dir(dir.path().join("all"))
        .expect("pages")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for sub in subcommands() {
        assert!(
            pages.contains(&format!("trellis-{sub}.1")),
            "no page for {sub}: {pages:?}"
        );
    }
    for nested in [
        "targets-register",
        "targets-deregister",
        "instances-protect",
    ] {
        assert!(pages.contains(&format!("trellis-{nested}.1")), "{pages:?}");
    }
    assert_eq!(
        std::fs::read(&page).unwrap(),
        std::fs::read(dir.path().join("all/trellis.1")).unwrap(),
        "`trellis man` and `trellis man --out-dir` disagree on trellis.1"
    );

    let Some(_) = tools::required(&["groff"], "groff", "the manual pages' rendering") else {
        return;
    };
    for name in &pages {
        let (warnings, text) = groff(&dir.path().join("all").join(name));
        assert!(warnings.is_empty(), "{name}: {warnings}");
        assert!(text.contains("SYNOPSIS"), "{name}:\n{text}");
    }
    let (_, text) = groff(&dir.path().join("all/trellis-run.1"));
    for flag in ["--config", "--shutdown-grace", "--state-dir", "READY=1"] {
        assert!(text.contains(flag), "trellis-run(1) lacks {flag}:\n{text}");
    }
}

/// The long flags `trellis ARGS --help` lists, `--help` and `--version` aside.
fn flags(args: &[&str]) -> Vec<String> {
    let mut args = args.to_vec();
    args.push("--help");
    run(&args)
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-")
                .and_then(|l| l.split_once(", "))
                .map_or(l, |(_, rest)| rest);
            l.strip_prefix("--")
        })
        .filter_map(|l| l.split([' ', ',']).next())
        .filter(|f| !matches!(*f, "help" | "version"))
        .map(|f| format!("--{f}"))
        .collect()
}

/// The code of README.md: inline code spans and the lines of fenced blocks.
fn readme_code() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let mut code = Vec::new();
    let mut fenced = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            code.push(line.to_owned());
        } else {
            code.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    code
}

/// The README shows every subcommand and every flag, and every `trellis ...` command line in its code
/// names a real subcommand with flags it has.
#[test]
fn the_readme_and_the_help_agree() {
    let code = readme_code();
    let all_code = code.join("\n");
    let nested: &[(&str, &[&str])] = &[
        ("targets", &["register", "deregister"]),
        ("instances", &["protect", "unprotect"]),
        ("fleet", &["apply", "status", "import", "export"]),
    ];
    let mut missing = Vec::new();
    for sub in subcommands() {
        if !all_code.contains(&format!("trellis {sub}")) {
            missing.push(format!("trellis {sub}"));
        }
        let commands: Vec<Vec<&str>> = match nested.iter().find(|(name, _)| *name == sub) {
            Some((_, subs)) => subs.iter().map(|s| vec![sub.as_str(), *s]).collect(),
            None => vec![vec![sub.as_str()]],
        };
        for command in commands {
            for flag in flags(&command) {
                if !all_code.contains(&flag) {
                    missing.push(format!("trellis {} {flag}", command.join(" ")));
                }
            }
        }
    }
    assert!(missing.is_empty(), "README.md does not show: {missing:?}");

    // Every command line in the README's code: a subcommand that exists, with flags it has.
    let subs = subcommands();
    let global = flags(&[]);
    let mut wrong = Vec::new();
    for line in &code {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if !(*word == "trellis" || word.ends_with("/trellis")) {
                continue;
            }
            let Some(sub) = words
                .get(i + 1)
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
            else {
                continue;
            };
            if !subs.iter().any(|s| s == sub) {
                wrong.push(format!("{line}: no subcommand {sub}"));
                continue;
            }
            let mut command = vec![*sub];
            if let Some((_, nested_subs)) = nested.iter().find(|(name, _)| name == sub) {
                match words.get(i + 2) {
                    Some(next) if nested_subs.contains(next) => command.push(next),
                    _ => continue,
                }
            }
            let known = flags(&command);
            for flag in words[i + 1..]
                .iter()
                .take_while(|w| !matches!(**w, "|" | "&&" | ";" | ">" | "#"))
            {
                let flag = flag
                    .split('=')
                    .next()
                    .unwrap_or(flag)
                    .trim_end_matches([',', ')', '.']);
                if flag.starts_with("--")
                    && flag.len() > 2
                    && !known.iter().chain(&global).any(|k| k == flag)
                    && !matches!(flag, "--help" | "--version")
                {
                    wrong.push(format!(
                        "{line}: trellis {} has no {flag}",
                        command.join(" ")
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "README.md shows commands that do not exist:\n{}",
        wrong.join("\n")
    );
}
