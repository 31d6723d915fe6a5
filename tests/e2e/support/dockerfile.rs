//! Reading `deploy/docker/Dockerfile` and `.dockerignore` as Docker reads them, for the checks that can be
//! made without a Docker engine: which files the build sees, what the runtime stage copies where, and the
//! exact argument vectors of ENTRYPOINT, CMD and HEALTHCHECK, which the tests then hand to the real binary.
//!
//! Only the syntax the project's Dockerfile uses is understood; anything else panics rather than being
//! read wrongly (a check that misreads the file would pass for the wrong reason).

use std::path::{Path, PathBuf};

/// One instruction, continuation lines joined.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// Upper-cased: `FROM`, `COPY`, `RUN`, ...
    pub keyword: String,
    /// Everything after the keyword, trimmed.
    pub args: String,
    /// 1-based line of the keyword, for messages.
    pub line: usize,
}

/// A build stage: its `FROM` and the instructions up to the next `FROM`.
#[derive(Debug)]
pub struct Stage {
    /// The image after `FROM`, as written (`${ARG}`s not expanded).
    pub base: String,
    /// The name after `AS`, if any.
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug)]
pub struct Dockerfile {
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn read(path: &Path) -> Dockerfile {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Dockerfile::parse(&text)
    }

    /// Comments (`#` first on a line, also between continuation lines, as Docker drops them) and blank
    /// lines are skipped; a line ending in `\` continues on the next.
    pub fn parse(text: &str) -> Dockerfile {
        let mut instructions = Vec::new();
        let mut pending: Option<(usize, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (body, continues) = match trimmed.strip_suffix('\\') {
                Some(body) => (body.trim_end(), true),
                None => (trimmed, false),
            };
            let (line, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(body);
            if continues {
                pending = Some((line, joined));
                continue;
            }
            let (keyword, args) = joined
                .split_once(char::is_whitespace)
                .unwrap_or((&joined, ""));
            instructions.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
                line,
            });
        }
        assert!(
            pending.is_none(),
            "the Dockerfile ends in a continuation line"
        );

        let mut stages: Vec<Stage> = Vec::new();
        for ins in instructions {
            if ins.keyword == "FROM" {
                let words: Vec<&str> = ins.args.split_whitespace().collect();
                let (base, name) = match words.as_slice() {
                    [base] => (*base, None),
                    [base, as_, name] if as_.eq_ignore_ascii_case("as") => (*base, Some(*name)),
                    _ => panic!("line {}: FROM {} is not understood", ins.line, ins.args),
                };
                stages.push(Stage {
                    base: base.to_owned(),
                    name: name.map(str::to_owned),
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(ins);
            } else {
                // Only ARGs (for FROM lines) may come before the first FROM.
                assert_eq!(
                    ins.keyword, "ARG",
                    "line {}: before the first FROM",
                    ins.line
                );
            }
        }
        assert!(!stages.is_empty(), "the Dockerfile has no FROM");
        Dockerfile { stages }
    }

    /// The last stage: what `docker build` produces without `--target`.
    pub fn runtime(&self) -> &Stage {
        self.stages.last().expect("at least one stage")
    }

    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no stage named {name}"))
    }
}

impl Stage {
    pub fn all(&self, keyword: &str) -> impl Iterator<Item = &Instruction> + '_ {
        let keyword = keyword.to_owned();
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
    }

    /// The instruction that takes effect when a keyword may appear more than once (USER, CMD, ...).
    pub fn last(&self, keyword: &str) -> Option<&Instruction> {
        self.all(keyword).last()
    }

    /// The working directory COPY and RUN use (`/` without WORKDIR; only absolute WORKDIRs are used here).
    pub fn workdir(&self) -> PathBuf {
        let dir = self.last("WORKDIR").map_or("/", |i| i.args.as_str());
        assert!(dir.starts_with('/'), "WORKDIR {dir} is not absolute");
        PathBuf::from(dir)
    }

    pub fn copies(&self) -> Vec<CopyStep> {
        self.all("COPY").map(CopyStep::parse).collect()
    }
}

/// The JSON array of an exec-form instruction (ENTRYPOINT, CMD, HEALTHCHECK's CMD, RUN [...]). Shell form
/// is refused: the runtime image has no shell to run it.
pub fn exec_form(ins: &Instruction, args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| {
        panic!(
            "line {}: {} {args} is not in exec form (a JSON array of strings): {e}",
            ins.line, ins.keyword
        )
    })
}

/// A parsed `COPY [--from=S] [--chown=U:G] [--chmod=M] SRC... DEST`.
#[derive(Debug)]
pub struct CopyStep {
    pub from: Option<String>,
    pub chown: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
    pub line: usize,
}

impl CopyStep {
    fn parse(ins: &Instruction) -> CopyStep {
        let mut from = None;
        let mut chown = None;
        let mut rest = Vec::new();
        for word in ins.args.split_whitespace() {
            if let Some(flag) = word.strip_prefix("--") {
                match flag.split_once('=') {
                    Some(("from", v)) => from = Some(v.to_owned()),
                    Some(("chown", v)) => chown = Some(v.to_owned()),
                    // Neither changes what lands where, nor whose it is.
                    Some(("chmod", _)) => {}
                    None if flag == "link" => {}
                    _ => panic!("line {}: COPY flag --{flag} is not understood", ins.line),
                }
            } else {
                assert!(
                    !word.starts_with('['),
                    "line {}: COPY in JSON form is not understood",
                    ins.line
                );
                rest.push(word.to_owned());
            }
        }
        let dest = rest.pop().unwrap_or_default();
        assert!(
            !rest.is_empty(),
            "line {}: COPY needs a source and a destination",
            ins.line
        );
        CopyStep {
            from,
            chown,
            sources: rest,
            dest,
            line: ins.line,
        }
    }

    /// Where a source lands, given the stage's working directory: `DEST/NAME` when DEST ends with `/`
    /// (or there are several sources), else DEST itself.
    pub fn target_of(&self, source: &str, workdir: &Path) -> PathBuf {
        let dest = workdir.join(&self.dest);
        if self.dest.ends_with('/') || self.sources.len() > 1 {
            let name = Path::new(source).file_name().expect("source has a name");
            dest.join(name)
        } else {
            dest
        }
    }
}

/// `.dockerignore` as BuildKit applies it: a pattern excludes a path when it matches the path or one of
/// its parent directories; `**` matches any number of directories, `*` and `?` stay within one; the last
/// matching line decides, and `!` lines re-include.
#[derive(Debug)]
pub struct DockerIgnore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    pub fn read(path: &Path) -> DockerIgnore {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negated, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                assert!(
                    !pattern.contains(['[', '\\']),
                    "{pattern}: character classes and escapes are not understood"
                );
                let segments = pattern
                    .trim_start_matches('/')
                    .trim_end_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (negated, segments)
            })
            .collect();
        DockerIgnore { patterns }
    }

    /// Whether `path` (relative to the context root, `/`-separated) is left out of the build context.
    pub fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (negated, pattern) in &self.patterns {
            let hit = (1..=segments.len()).any(|n| segments_match(pattern, &segments[..n]));
            if hit {
                excluded = !negated;
            }
        }
        excluded
    }

    /// Copies what the context holds under `source` (relative to `root`) to `dest`, as `COPY source dest`
    /// would: a directory's contents, or the file itself. Returns how many files were copied.
    pub fn copy_context(&self, root: &Path, source: &str, dest: &Path) -> usize {
        let from = root.join(source);
        if from.is_file() {
            if self.excludes(source) {
                return 0;
            }
            std::fs::create_dir_all(dest.parent().expect("destination has a parent"))
                .expect("create destination directory");
            std::fs::copy(&from, dest).expect("copy a context file");
            return 1;
        }
        let mut copied = 0;
        let entries =
            std::fs::read_dir(&from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().into_string().expect("UTF-8 file name");
            let relative = format!("{}/{name}", source.trim_end_matches('/'));
            let file_type = entry.file_type().expect("file type");
            if self.excludes(&relative) && !self.has_exceptions() {
                continue; // nothing below an excluded directory can come back without `!` lines
            }
            if file_type.is_dir() {
                copied += self.copy_context(root, &relative, &dest.join(&name));
            } else if file_type.is_file() && !self.excludes(&relative) {
                std::fs::create_dir_all(dest).expect("create destination directory");
                std::fs::copy(entry.path(), dest.join(&name)).expect("copy a context file");
                copied += 1;
            }
        }
        copied
    }

    fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|(negated, _)| *negated)
    }
}

fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| segments_match(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => {
                glob(first.as_bytes(), segment.as_bytes()) && segments_match(rest, path_rest)
            }
            None => false,
        },
    }
}

/// `*` (any run of characters) and `?` (one character) within one path segment.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}
