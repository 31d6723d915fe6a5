//! Reads the manual (the repository's README.md): the key tables of its configuration reference and its
//! TOML examples. The format is strict on purpose, so that a table the reader sees is a table this reads:
//! a reference heading that names a TOML path must be followed by a key table with the standard header,
//! and a key table must sit under such a heading.

use std::path::PathBuf;

/// Where the reference starts; it ends at the next `## ` heading.
pub const REFERENCE: &str = "## Configuration reference";
/// The header every key table has.
pub const HEADER: &str = "| key | type | default | range / values | meaning |";
/// What the type column may say. `table` and `array of tables` rows point at their own heading.
pub const TYPES: &[&str] = &[
    "string",
    "path",
    "duration",
    "integer",
    "float",
    "bool",
    "array of strings",
    "table of strings",
    "table",
    "array of tables",
];

pub fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")
}

pub fn readme() -> String {
    let path = readme_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `[a.b]` or `[[a.b]]` in a heading.
#[derive(Debug, Clone)]
pub struct TomlPath {
    pub dotted: String,
    pub array: bool,
}

#[derive(Debug)]
pub struct Row {
    /// 1-based line in the README.
    pub line: usize,
    pub key: String,
    pub ty: String,
}

/// One key table and the TOML paths its heading names (several when one table serves several paths,
/// as `[limits]` and `[service.listener.limits]` do).
#[derive(Debug)]
pub struct KeyTable {
    pub line: usize,
    pub paths: Vec<TomlPath>,
    pub rows: Vec<Row>,
}

/// The reference's key tables, or every way the text breaks the format.
pub fn reference(text: &str) -> Result<Vec<KeyTable>, Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == REFERENCE) else {
        return Err(vec![format!("no line {REFERENCE:?}")]);
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut tables = Vec::new();
    let mut problems = Vec::new();
    let mut i = start + 1;
    while i < end {
        let Some(heading) = lines[i].strip_prefix("### ") else {
            if lines[i].trim_end() == HEADER {
                problems.push(format!(
                    "README.md:{}: a key table outside a heading that names a TOML path",
                    i + 1
                ));
            }
            i += 1;
            continue;
        };
        let paths = heading_paths(heading);
        let heading_line = i + 1;
        // The section of this heading: up to the next heading.
        let next = lines[i + 1..end]
            .iter()
            .position(|l| l.starts_with('#'))
            .map_or(end, |j| i + 1 + j);
        let header = (i + 1..next).find(|&j| lines[j].starts_with('|'));
        match (paths.is_empty(), header) {
            (true, Some(j)) if lines[j].trim_end() == HEADER => problems.push(format!(
                "README.md:{}: a key table under a heading that names no TOML path",
                j + 1
            )),
            (true, _) => {}
            (false, None) => problems.push(format!(
                "README.md:{heading_line}: no key table under this heading"
            )),
            (false, Some(j)) if lines[j].trim_end() != HEADER => problems.push(format!(
                "README.md:{}: a key table's header must be {HEADER:?}",
                j + 1
            )),
            (false, Some(j)) => {
                let rows = (j + 2..next)
                    .take_while(|&k| lines[k].starts_with('|'))
                    .filter_map(|k| match row(lines[k]) {
                        Ok(r) => Some(Row { line: k + 1, ..r }),
                        Err(why) => {
                            problems.push(format!("README.md:{}: {why}", k + 1));
                            None
                        }
                    })
                    .collect();
                tables.push(KeyTable {
                    line: heading_line,
                    paths,
                    rows,
                });
            }
        }
        i = next;
    }
    if problems.is_empty() {
        Ok(tables)
    } else {
        Err(problems)
    }
}

/// Every `` `[path]` `` and `` `[[path]]` `` in a heading.
fn heading_paths(heading: &str) -> Vec<TomlPath> {
    heading
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| {
            let (inner, array) = match code.strip_prefix("[[").and_then(|c| c.strip_suffix("]]")) {
                Some(inner) => (inner, true),
                None => (code.strip_prefix('[')?.strip_suffix(']')?, false),
            };
            let valid = !inner.is_empty()
                && inner.split('.').all(|s| {
                    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                });
            valid.then(|| TomlPath {
                dotted: inner.to_string(),
                array,
            })
        })
        .collect()
}

/// `` | `key` | type | default | range | meaning | `` (a `\|` inside a cell is not a separator).
fn row(line: &str) -> Result<Row, String> {
    let cells: Vec<String> = line
        .trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .replace("\\|", "\u{0}")
        .split('|')
        .map(|c| c.trim().replace('\u{0}', "|"))
        .collect();
    if cells.len() != 5 {
        return Err(format!("a key row has 5 cells, this one {}", cells.len()));
    }
    let key = cells[0]
        .strip_prefix('`')
        .and_then(|k| k.strip_suffix('`'))
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .ok_or_else(|| {
            format!(
                "the key cell must be one key in backquotes, not {:?}",
                cells[0]
            )
        })?;
    if !TYPES.contains(&cells[1].as_str()) {
        return Err(format!("type {:?} is not one of {TYPES:?}", cells[1]));
    }
    Ok(Row {
        line: 0,
        key: key.to_string(),
        ty: cells[1].clone(),
    })
}

/// A fenced block whose info string is exactly `toml`: a whole configuration file. Parts of one are
/// fenced as `toml fragment` and are not returned.
#[derive(Debug)]
pub struct TomlBlock {
    pub line: usize,
    pub text: String,
}

pub fn toml_blocks(text: &str) -> Vec<TomlBlock> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| !l.starts_with("```"))
            .collect();
        if info.trim() == "toml" {
            blocks.push(TomlBlock {
                line: i + 1,
                text: body.join("\n") + "\n",
            });
        }
    }
    blocks
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, only letters, digits, `-` and `_` kept.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading outside code blocks (where `# ...` is a comment).
pub fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let title = line.trim_start_matches('#');
            if title.starts_with(' ') {
                out.push(anchor(title));
            }
        }
    }
    out
}

/// `(line, target)` of every `](#target)` link.
pub fn section_links(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .flat_map(|(i, line)| {
            line.split("](#")
                .skip(1)
                .filter_map(move |rest| rest.split_once(')').map(|(t, _)| (i + 1, t.to_string())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# x\n\n## Configuration reference\n\nprose\n\n### Types\n\nprose\n\n\
### `[a]`, `[[b.c]]`\n\nA table.\n\n| key | type | default | range / values | meaning |\n|---|---|---|---|---|\n\
| `k` | string | `\"x\"` | `\"x\"` \\| `\"y\"` | m |\n| `l` | table | | | |\n\n## Next\n\n\
### `[z]`\n\n| key | type | default | range / values | meaning |\n";

    #[test]
    fn reads_paths_rows_and_escaped_pipes() {
        let tables = reference(SAMPLE).unwrap();
        assert_eq!(tables.len(), 1, "{tables:?}");
        let t = &tables[0];
        let paths: Vec<(&str, bool)> = t
            .paths
            .iter()
            .map(|p| (p.dotted.as_str(), p.array))
            .collect();
        assert_eq!(paths, [("a", false), ("b.c", true)]);
        let rows: Vec<(&str, &str)> = t
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.ty.as_str()))
            .collect();
        assert_eq!(rows, [("k", "string"), ("l", "table")]);
        assert_eq!(t.rows[0].line, 17);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (from, to, expect) in [
            ("| `k` | string", "| k | string", "one key in backquotes"),
            ("| `k` | string", "| `k` | text", "is not one of"),
            ("| m |\n", "|\n", "5 cells"),
            (
                "| key | type | default",
                "| key | type | defaults",
                "header must be",
            ),
            ("### `[a]`, `[[b.c]]`", "### a", "names no TOML path"),
        ] {
            let text = SAMPLE.replacen(from, to, 1);
            let problems = reference(&text).unwrap_err();
            assert!(
                problems.iter().any(|p| p.contains(expect)),
                "{expect}: {problems:?}"
            );
        }
    }

    #[test]
    fn anchors_and_links() {
        assert_eq!(
            anchor("`[service.rate_limit]`, `[service.listener.rule.rate_limit]`"),
            "servicerate_limit-servicelistenerrulerate_limit"
        );
        assert_eq!(anchor("TLS: `https` listeners"), "tls-https-listeners");
        let links = section_links("see [a](#x) and [b](#y-z).\n[c](https://e.x)\n");
        assert_eq!(links, [(1, "x".to_string()), (1, "y-z".to_string())]);
        let text = "# A b\n```sh\n# not a heading\n```\n## C `d`\n#e\n";
        assert_eq!(anchors(text), ["a-b", "c-d"]);
    }

    #[test]
    fn finds_whole_files_not_fragments() {
        let text = "```toml\na = 1\n```\n\n```toml fragment\nb = 2\n```\n```sh\nc\n```\n";
        let blocks = toml_blocks(text);
        assert_eq!(blocks.len(), 1);
        assert_eq!((blocks[0].line, blocks[0].text.as_str()), (1, "a = 1\n"));
    }
}
