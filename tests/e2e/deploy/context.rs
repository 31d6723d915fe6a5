//! The build context: what `.dockerignore` leaves of the repository, and the Dockerfile reader itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{repo, Image};
use crate::support::dockerfile::{exec_form, DockerIgnore, Dockerfile};

#[test]
fn dockerignore_keeps_what_the_image_build_reads_and_drops_the_rest() {
    let root = repo();
    let ignore = DockerIgnore::read(&root.join(".dockerignore"));
    // What makes a context large or leaks history: never sent.
    for path in [
        "target/debug/trellis",
        ".git/HEAD",
        "fuzz/artifacts/config/crash-1",
    ] {
        assert!(ignore.excludes(path), ".dockerignore keeps {path}");
    }

    let image = Image::load();
    let mut builder = None;
    for stage in &image.file.stages {
        for copy in stage.copies().iter().filter(|c| c.from.is_none()) {
            for source in &copy.sources {
                assert!(
                    root.join(source).exists(),
                    "line {}: no {source}",
                    copy.line
                );
                assert!(
                    !ignore.excludes(source),
                    "line {}: .dockerignore drops {source}",
                    copy.line
                );
            }
        }
        if stage.all("RUN").any(|r| r.args.contains("cargo build")) {
            builder = Some(stage);
        }
    }

    // The builder's view of the context, rebuilt from its COPY lines and .dockerignore, must be a
    // workspace cargo loads with the lock file as it is: every member, every declared target, Cargo.lock
    // up to date. (`cargo fetch` reads all of that and compiles nothing; offline, since the test build
    // has everything.)
    let builder = builder.expect("a stage runs cargo build");
    let workdir = builder.workdir();
    let context = tempfile::tempdir().expect("tempdir");
    for copy in builder.copies().iter().filter(|c| c.from.is_none()) {
        for source in &copy.sources {
            let target = copy.target_of(source, &workdir);
            let relative = target.strip_prefix(&workdir).unwrap_or_else(|_| {
                panic!(
                    "line {}: {source} lands outside WORKDIR {}",
                    copy.line,
                    workdir.display()
                )
            });
            let copied = ignore.copy_context(&root, source, &context.path().join(relative));
            assert!(
                copied > 0,
                "line {}: nothing of {source} reaches the build",
                copy.line
            );
        }
    }
    let cargo = env!("CARGO");
    let version = Command::new(cargo).arg("-vV").output().expect("cargo -vV");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("cargo -vV names the host");
    let out = Command::new(cargo)
        .args(["fetch", "--locked", "--offline", "--target", host])
        .current_dir(context.path())
        .env("CARGO_TARGET_DIR", context.path().join("target"))
        .output()
        .expect("run cargo fetch");
    assert!(
        out.status.success(),
        "the image's build context is not a loadable workspace:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerignore_patterns_match_as_buildkit_matches_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(".dockerignore");
    std::fs::write(
        &path,
        "target\n**/*.profraw\nfuzz/\n/docs/*.md\n!docs/keep.md\n",
    )
    .expect("write");
    let ig = DockerIgnore::read(&path);
    assert!(ig.excludes("target"));
    assert!(
        ig.excludes("target/release/trellis"),
        "a parent directory matches"
    );
    assert!(!ig.excludes("crates/target.rs"));
    assert!(
        !ig.excludes("crates/x/target"),
        "without **, the top level only"
    );
    assert!(
        ig.excludes("default.profraw"),
        "** matches no directory too"
    );
    assert!(ig.excludes("crates/proxy/x.profraw"));
    assert!(
        ig.excludes("fuzz/Cargo.toml"),
        "a trailing / changes nothing"
    );
    assert!(ig.excludes("docs/a.md"), "a leading / changes nothing");
    assert!(!ig.excludes("docs/keep.md"), "a later ! line re-includes");
    assert!(!ig.excludes("docs/sub/a.md"), "* stays within one segment");
    assert!(!ig.excludes("Cargo.toml"));
}

#[test]
fn dockerfile_reader_joins_continuations_and_skips_comments() {
    let file = Dockerfile::parse(
        "# syntax=docker/dockerfile:1\nARG V=1\nFROM rust:${V} AS builder\nRUN a \\\n  # note\n  b\n\
         FROM scratch\nCOPY --from=builder --chown=1:1 /x /y\nCOPY a b ./\nCMD [\"run\"]\n",
    );
    assert_eq!(file.stages.len(), 2);
    assert_eq!(file.stage("builder").base, "rust:${V}");
    let run = file.stage("builder").last("RUN").expect("RUN");
    assert_eq!((run.args.as_str(), run.line), ("a b", 4));
    let copies = file.runtime().copies();
    assert_eq!(copies[0].from.as_deref(), Some("builder"));
    assert_eq!(copies[0].chown.as_deref(), Some("1:1"));
    assert_eq!(
        copies[0].target_of("/x", Path::new("/")),
        PathBuf::from("/y")
    );
    assert_eq!(
        copies[1].target_of("b", Path::new("/src")),
        PathBuf::from("/src/./b")
    );
    let cmd = file.runtime().last("CMD").expect("CMD");
    assert_eq!(exec_form(cmd, &cmd.args), vec!["run".to_owned()]);
}
