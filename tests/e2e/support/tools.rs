//! Programs from the machine that some tests drive (Chromium, systemd-analyze, shells, man). Missing
//! one skips those tests with a word on stderr, except under CI (`CI` set), where `.ci/run` installs
//! them and a missing one is a failure.

use std::io::Write;
use std::path::PathBuf;

/// The first of `names` found on `PATH`.
pub fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The first of `names` on `PATH`; when there is none, panics under CI, else says that `purpose` is not
/// tested (install `package`) and returns `None`.
pub fn required(names: &[&str], package: &str, purpose: &str) -> Option<PathBuf> {
    let found = find(names);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is not installed, and {purpose} needs it under CI: apt-get install {package}",
            names[0]
        );
        // Straight to stderr: the test harness swallows `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {} is not installed (apt-get install {package}), so {purpose} is not tested",
            names[0]
        );
    }
    found
}
