//! The README's configuration reference and the parser agree, both ways.
//!
//! - The keys the reference documents are exactly the keys the parser accepts, as
//!   `trellis_config::known_keys` reads them from the raw serde structs: a field added to a `Raw*` struct
//!   without a row fails here, and so does a row for a key that does not exist.
//! - Every documented key, written alone into a file the way the reference says (`[table]` or
//!   `[[array]]` headings, a value of the documented type), is not refused as unknown or mistyped by the
//!   real parser, the one `trellis check` runs.
//! - Every whole TOML file in the README (fenced as `toml`, not `toml fragment`) parses, and every link
//!   to a section lands on a heading.

mod manual;

use std::collections::BTreeMap;
use std::path::Path;

use manual::KeyTable;
use trellis_config::{known_keys, ConfigError, KeyKind};

/// A documented key: how it is written, its type column (rows only), and where.
#[derive(Debug)]
struct Doc {
    kind: KeyKind,
    ty: Option<String>,
    line: usize,
    /// It has a heading of its own (tables and arrays of tables must).
    heading: bool,
}

fn kind_of_type(ty: &str) -> KeyKind {
    match ty {
        "table" => KeyKind::Table,
        "array of tables" => KeyKind::ArrayOfTables,
        _ => KeyKind::Value,
    }
}

fn show(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Table => "a table",
        KeyKind::ArrayOfTables => "an array of tables",
        KeyKind::Value => "a value",
    }
}

/// Every key the reference documents, by full dotted path, or the ways the tables contradict themselves.
fn documented(tables: &[KeyTable]) -> Result<BTreeMap<String, Doc>, Vec<String>> {
    let mut docs: BTreeMap<String, Doc> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut add = |path: String, doc: Doc, problems: &mut Vec<String>| match docs.get_mut(&path) {
        None => {
            docs.insert(path, doc);
        }
        Some(seen) if seen.kind != doc.kind => problems.push(format!(
            "README.md:{}: `{path}` is {} here but {} at line {}",
            doc.line,
            show(doc.kind),
            show(seen.kind),
            seen.line
        )),
        // A sub-table's row in its parent's table, and its own heading: one key, documented twice over.
        Some(seen) if seen.heading != doc.heading => {
            seen.heading = true;
            if seen.ty.is_none() {
                seen.ty = doc.ty;
            }
        }
        Some(seen) => problems.push(format!(
            "README.md:{}: `{path}` is documented again (first at line {})",
            doc.line, seen.line
        )),
    };
    for table in tables {
        for p in &table.paths {
            let kind = if p.array {
                KeyKind::ArrayOfTables
            } else {
                KeyKind::Table
            };
            let doc = Doc {
                kind,
                ty: None,
                line: table.line,
                heading: true,
            };
            add(p.dotted.clone(), doc, &mut problems);
            for row in &table.rows {
                let doc = Doc {
                    kind: kind_of_type(&row.ty),
                    ty: Some(row.ty.clone()),
                    line: row.line,
                    heading: false,
                };
                add(format!("{}.{}", p.dotted, row.key), doc, &mut problems);
            }
        }
    }
    for (path, doc) in &docs {
        if doc.kind != KeyKind::Value && !doc.heading {
            problems.push(format!(
                "README.md:{}: `{path}` is {}: give it a heading of its own with its keys",
                doc.line,
                show(doc.kind)
            ));
        }
    }
    if problems.is_empty() {
        Ok(docs)
    } else {
        Err(problems)
    }
}

/// What differs between the documented keys and the accepted ones, one message per key.
fn compare(docs: &BTreeMap<String, Doc>, known: &BTreeMap<String, KeyKind>) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, kind) in known {
        match docs.get(path) {
            None => problems.push(format!(
                "`{path}` ({}) is accepted by the parser but not in the README's reference",
                show(*kind)
            )),
            Some(doc) if doc.kind != *kind => problems.push(format!(
                "README.md:{}: `{path}` is documented as {} but the parser takes {}",
                doc.line,
                show(doc.kind),
                show(*kind)
            )),
            Some(_) => {}
        }
    }
    for (path, doc) in docs {
        if !known.contains_key(path) {
            problems.push(format!(
                "README.md:{}: `{path}` is documented but the parser does not accept it",
                doc.line
            ));
        }
    }
    problems
}

fn reference_docs() -> BTreeMap<String, Doc> {
    let tables =
        manual::reference(&manual::readme()).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    documented(&tables).unwrap_or_else(|p| panic!("{}", p.join("\n")))
}

#[test]
fn the_reference_documents_exactly_the_keys_the_parser_accepts() {
    let known = known_keys().unwrap_or_else(|e| panic!("{e}"));
    let problems = compare(&reference_docs(), &known);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// A TOML value of a documented type.
fn sample(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "string" | "path" => "\"x\"",
        "duration" => "\"1s\"",
        "integer" => "1",
        "float" => "1.5",
        "bool" => "true",
        "array of strings" => "[\"x\"]",
        "table of strings" => "{ k = \"x\" }",
        _ => return None,
    })
}

/// A file holding `path` and nothing else, its tables written as the reference says.
fn file_with(path: &str, docs: &BTreeMap<String, Doc>) -> Result<String, String> {
    let segments: Vec<&str> = path.split('.').collect();
    let doc = &docs[path];
    let tables = if doc.kind == KeyKind::Value {
        segments.len() - 1
    } else {
        segments.len()
    };
    let mut text = String::new();
    for i in 1..=tables {
        let prefix = segments[..i].join(".");
        match docs.get(&prefix).map(|d| d.kind) {
            Some(KeyKind::Table) => text += &format!("[{prefix}]\n"),
            Some(KeyKind::ArrayOfTables) => text += &format!("[[{prefix}]]\n"),
            _ => return Err(format!("`{prefix}` has keys but no table heading")),
        }
    }
    if doc.kind == KeyKind::Value {
        let ty = doc.ty.as_deref().unwrap_or("");
        let value = sample(ty).ok_or_else(|| format!("no sample value of type {ty:?}"))?;
        text += &format!("{} = {value}\n", segments[segments.len() - 1]);
    }
    Ok(text)
}

/// Diagnostics that say the parser does not take a key where it was written, or not of that type (as
/// opposed to validation's opinion of the placeholder values and of what the file lacks).
fn structural(message: &str) -> bool {
    message.starts_with("unknown key")
        || message.starts_with("unknown section")
        || message.contains("invalid type")
        || message.contains("expected an array of tables")
        || message.contains("not handled by this build")
}

#[test]
fn the_parser_takes_every_documented_key_as_documented() {
    let docs = reference_docs();
    let mut problems = Vec::new();
    for (path, doc) in &docs {
        let text = match file_with(path, &docs) {
            Ok(t) => t,
            Err(why) => {
                problems.push(format!("README.md:{}: `{path}`: {why}", doc.line));
                continue;
            }
        };
        if let Err(ConfigError::Invalid(diags)) =
            trellis_config::parse(&text, Path::new("ref.toml"))
        {
            for d in diags.iter().filter(|d| structural(&d.message)) {
                problems.push(format!("README.md:{}: `{path}`: {d}\n{text}", doc.line));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_whole_toml_file_in_the_readme_parses() {
    let text = manual::readme();
    let blocks = manual::toml_blocks(&text);
    assert!(blocks.len() >= 5, "only {} toml blocks found", blocks.len());
    // Examples name certificates and key files the reader supplies; a missing file is the one error
    // allowed. Relative paths resolve beside the README, as they would beside a configuration file.
    let source = manual::readme_path().with_file_name("README-example.toml");
    let mut problems = Vec::new();
    for block in &blocks {
        if let Err(e) = trellis_config::parse(&block.text, &source) {
            let errors: Vec<String> = match e {
                ConfigError::Invalid(diags) => diags
                    .into_iter()
                    .filter(|d| {
                        !(d.message.starts_with("cannot read ")
                            && d.message.contains("No such file or directory"))
                    })
                    .map(|d| d.to_string())
                    .collect(),
                other => vec![other.to_string()],
            };
            if !errors.is_empty() {
                problems.push(format!(
                    "README.md:{}: the example does not parse (fence it as `toml fragment` if it is a part of a file):\n{}",
                    block.line,
                    errors.join("\n")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n\n"));
}

/// The reference's own links (and the rest of the manual's) land on a heading.
#[test]
fn every_link_to_a_section_lands_on_a_heading() {
    let text = manual::readme();
    let anchors = manual::anchors(&text);
    let links = manual::section_links(&text);
    assert!(
        links.len() >= 10,
        "only {} section links found",
        links.len()
    );
    let broken: Vec<String> = links
        .iter()
        .filter(|(_, target)| !anchors.contains(target))
        .map(|(line, target)| format!("README.md:{line}: no heading for #{target}"))
        .collect();
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

/// The comparison itself, on keys made up for the purpose: each kind of disagreement is reported, by key.
#[test]
fn compare_names_every_key_that_differs() {
    let doc = |kind, line| Doc {
        kind,
        ty: None,
        line,
        heading: kind != KeyKind::Value,
    };
    let docs = BTreeMap::from([
        ("a".to_string(), doc(KeyKind::Table, 1)),
        ("a.same".to_string(), doc(KeyKind::Value, 2)),
        ("a.ghost".to_string(), doc(KeyKind::Value, 3)),
        ("a.shape".to_string(), doc(KeyKind::Table, 4)),
    ]);
    let known = BTreeMap::from([
        ("a".to_string(), KeyKind::Table),
        ("a.same".to_string(), KeyKind::Value),
        ("a.new".to_string(), KeyKind::Value),
        ("a.shape".to_string(), KeyKind::ArrayOfTables),
    ]);
    let problems = compare(&docs, &known);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("`a.new`") && problems[0].contains("not in the README"));
    assert!(problems[1].contains("`a.shape`") && problems[1].contains("an array of tables"));
    assert!(problems[2].contains("README.md:3: `a.ghost`"));
}

/// A sub-table must have a heading, and a key documented twice is an error.
#[test]
fn documented_refuses_tables_without_headings_and_repeats() {
    let text = format!(
        "{}\n\n### `[a]`\n\n{}\n|---|---|---|---|---|\n| `t` | table | | | |\n| `k` | bool | | | |\n| `k` | bool | | | |\n",
        manual::REFERENCE,
        manual::HEADER
    );
    let tables = manual::reference(&text).unwrap();
    let problems = documented(&tables).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems
        .iter()
        .any(|p| p.contains("`a.k` is documented again")));
    assert!(problems
        .iter()
        .any(|p| p.contains("`a.t` is a table: give it a heading")));
}
