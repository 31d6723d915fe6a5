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
