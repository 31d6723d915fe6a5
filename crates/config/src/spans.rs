//! Where each key path sits in the file.
//!
//! Validation works on plain serde structs (no `Spanned<T>` everywhere), so locations come from one walk of
//! the parsed `toml_edit` document: every key and array element is recorded under its key path
//! (`service[0].listener[0].rule[1].priority`). A semantic error then asks for its path's line, and a serde
//! error (which knows only a byte span) asks which path covers that span.

use std::collections::HashMap;
use std::ops::Range;

use toml_edit::{Item, Table, Value};

struct Entry {
    path: String,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

pub(crate) struct SpanIndex {
    line_starts: Vec<usize>,
    entries: Vec<Entry>,
    by_path: HashMap<String, usize>,
}

impl SpanIndex {
    pub(crate) fn new(text: &str, root: &Table) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut index = SpanIndex {
            line_starts,
            entries: Vec::new(),
            by_path: HashMap::new(),
        };
        index.walk_table(root, "");
        index
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// Line of `path`'s key (or element); when the key is absent, the nearest ancestor that is present,
    /// which for a missing key is its table's header.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(&i) = self.by_path.get(p) {
                let e = &self.entries[i];
                if let Some(span) = e.key.as_ref().or(e.value.as_ref()) {
                    return Some(self.line_at(span.start));
                }
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }

    /// The key path that a serde error's span points into: a key whose name is the span (unknown keys), or
    /// else the innermost value containing it (wrong types).
    pub(crate) fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.key.as_ref().is_some_and(|k| k.contains(&span.start)))
        {
            return Some(&e.path);
        }
        self.entries
            .iter()
            .filter(|e| {
                e.value
                    .as_ref()
                    .is_some_and(|v| v.contains(&span.start) || *v == *span)
            })
            .min_by_key(|e| e.value.as_ref().map_or(usize::MAX, |v| v.len()))
            .map(|e| e.path.as_str())
    }

    fn record(&mut self, path: String, key: Option<Range<usize>>, value: Option<Range<usize>>) {
        // First writer wins: toml forbids duplicate keys, so a second entry can only be an implicit table.
        if !self.by_path.contains_key(&path) {
            self.by_path.insert(path.clone(), self.entries.len());
        }
        self.entries.push(Entry { path, key, value });
    }

    fn walk_table(&mut self, table: &Table, path: &str) {
        for (name, item) in table.iter() {
            let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
            let child = join(path, name);
            self.record(child.clone(), key_span, item.span());
            self.walk_item(item, &child);
        }
    }

    fn walk_item(&mut self, item: &Item, path: &str) {
        match item {
            Item::Table(t) => self.walk_table(t, path),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.record(child.clone(), None, t.span());
                    self.walk_table(t, &child);
                }
            }
            Item::Value(v) => self.walk_value(v, path),
            Item::None => {}
        }
    }

    fn walk_value(&mut self, value: &Value, path: &str) {
        match value {
            Value::InlineTable(t) => {
                for (name, v) in t.iter() {
                    let key_span = t.get_key_value(name).and_then(|(k, _)| k.span());
                    let child = join(path, name);
                    self.record(child.clone(), key_span, v.span());
                    self.walk_value(v, &child);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.record(child.clone(), None, v.span());
                    self.walk_value(v, &child);
                }
            }
            _ => {}
        }
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``.
fn parent(path: &str) -> &str {
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind('.')
    };
    match cut {
        Some(i) => &path[..i],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent("a.b[2]"), "a.b");
        assert_eq!(parent("a.b"), "a");
        assert_eq!(parent("a"), "");
    }

    #[test]
    fn lines_and_paths() {
        let text = "[a]\nx = 1\n\n[[b]]\ny = { z = [1, \"q\"] }\n";
        let doc = toml_edit::ImDocument::parse(text).expect("valid");
        let idx = SpanIndex::new(text, doc.as_table());
        assert_eq!(idx.line_of("a.x"), Some(2));
        assert_eq!(idx.line_of("a.missing"), Some(1));
        assert_eq!(idx.line_of("b[0].y.z[1]"), Some(5));
        assert_eq!(idx.line_of("b[0]"), Some(4));
        let q = text.find("\"q\"").expect("present");
        assert_eq!(idx.path_at(&(q..q + 3)), Some("b[0].y.z[1]"));
    }
}
