//! Collects every problem in a file instead of stopping at the first.

use crate::error::Diagnostic;
use crate::spans::SpanIndex;

pub(crate) struct Diags<'a> {
    file: String,
    /// The text, to locate problems in.
    source: Option<&'a str>,
    /// Built on the first problem, from a second parse of the text: indexing every key of a large file
    /// costs more than validating it, and a valid file never needs it.
    index: std::cell::OnceCell<Option<SpanIndex>>,
    list: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub(crate) fn new(file: String, source: Option<&'a str>) -> Self {
        Diags {
            file,
            source,
            index: std::cell::OnceCell::new(),
            list: Vec::new(),
        }
    }

    fn index(&self) -> Option<&SpanIndex> {
        let text = self.source?;
        self.index
            .get_or_init(|| {
                let doc = toml_edit::ImDocument::parse(text).ok()?;
                Some(SpanIndex::new(text, doc.as_table()))
            })
            .as_ref()
    }

    /// A problem with the key at `path`, located on that key's line (or its table's header if absent).
    pub(crate) fn err(&mut self, path: &str, message: impl Into<String>) {
        let line = self.index().and_then(|i| i.line_of(path));
        self.push(line, path.to_string(), message.into());
    }

    pub(crate) fn push(&mut self, line: Option<usize>, key: String, message: String) {
        self.push_at(line, None, key, message);
    }

    fn push_at(
        &mut self,
        line: Option<usize>,
        column: Option<usize>,
        key: String,
        message: String,
    ) {
        self.list.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            key: one_line(key),
            message: one_line(message),
        });
    }

    /// A serde error from deserializing the unit at `unit_path`: locate it by its span when it has one.
    pub(crate) fn serde(&mut self, unit_path: &str, e: &toml_edit::de::Error) {
        let located = self.index().zip(e.span()).map(|(idx, span)| {
            let path = idx.path_at(&span).unwrap_or(unit_path).to_string();
            (Some(idx.line_at(span.start)), path)
        });
        let (line, key) = match located {
            Some(l) => l,
            None => (
                self.index().and_then(|i| i.line_of(unit_path)),
                unit_path.to_string(),
            ),
        };
        self.push(line, key, friendly(e.message()));
    }

    /// A TOML syntax error in `text`, at the line and column where the parser stopped.
    pub(crate) fn syntax(&mut self, text: &str, e: &toml_edit::TomlError) {
        let (line, column) = e.span().map(|s| line_column(text, s.start)).unzip();
        let message = e.message().trim_end().replace('\n', "; ");
        self.push_at(line, column, String::new(), message);
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// All diagnostics in file order (stable, so same-line problems keep the order they were found in).
    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| d.line.unwrap_or(0));
        self.list
    }
}

/// 1-based line and column of a byte offset; the column counts characters, as editors do.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// The candidate `word` was most likely meant to be: at most two edits away, fewer for short words (where
/// two edits reach unrelated words: one for three or four letters, none below), a swap of neighbours
/// counting as one edit.
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (word.chars().count().saturating_sub(1) / 2).min(2);
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// `unknown key `healty_threshold`, expected one of ...` → `unknown key `healty_threshold` (did you mean
/// `healthy_threshold`?), expected one of ...`: the suggestion before the list, which can be long.
fn suggest(message: String) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message;
    };
    if !head.starts_with("unknown ") {
        return message;
    }
    let Some(word) = head.split('`').nth(1) else {
        return message;
    };
    // `a`, `b` or `c`: every other piece between backticks is a candidate.
    match closest(word, expected.split('`').skip(1).step_by(2)) {
        Some(c) => format!("{head} (did you mean `{c}`?), expected {expected}"),
        None => message,
    }
}

/// A key path or message that quotes the file (a key named `"a\nb"`) with its control characters escaped
/// (`a\nb`), so that each diagnostic stays one `FILE:LINE: key: message` line.
fn one_line(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Serde speaks Rust (`expected i64`); users wrote TOML.
fn friendly(message: &str) -> String {
    let msg = suggest(message.trim_end().replace("unknown field", "unknown key"));
    [
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("expected a borrowed string", "expected a string"),
    ]
    .iter()
    .fold(msg, |m, (from, to)| m.replace(from, to))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_diagnostic_is_one_line() {
        // Found by fuzz/fuzz_targets/config_built.rs: the key path of an auth statement's header name
        // held the name's line break, and so did serde's message for an unknown key.
        let text =
            "[admin]\n\"a\\nb\" = 1\n\n[[auth_policy]]\nname = \"p\"\n[[auth_policy.statement]]\n\
                    effect = \"allow\"\nheaders = { \"k\\n\" = \"v\" }\n";
        let Err(crate::ConfigError::Invalid(errors)) = crate::parse(text, "c.toml".as_ref()) else {
            panic!("{text} parsed");
        };
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            shown.iter().any(|e| e.contains("admin.a\\nb")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.contains("auth_policy[0].statement[0].headers.k\\n")),
            "{shown:#?}"
        );
        let all = crate::ConfigError::Invalid(errors).to_string();
        assert!(all.lines().all(|l| l.starts_with("c.toml:")), "{all}");
    }

    #[test]
    fn friendly_messages() {
        assert_eq!(
            super::friendly("invalid type: string \"x\", expected i64"),
            "invalid type: string \"x\", expected an integer"
        );
        assert_eq!(
            super::friendly("unknown field `a`, expected `b`"),
            "unknown key `a`, expected `b`"
        );
    }

    #[test]
    fn a_close_key_is_suggested() {
        assert_eq!(
            super::friendly(
                "unknown field `healty_threshold`, expected one of `unhealthy_threshold`, \
                 `healthy_threshold`, `interval`"
            ),
            "unknown key `healty_threshold` (did you mean `healthy_threshold`?), expected one of \
             `unhealthy_threshold`, `healthy_threshold`, `interval`"
        );
        // A swap of neighbours is one edit; a short word allows only one.
        assert_eq!(
            super::closest("wieght", ["address", "weight"]),
            Some("weight")
        );
        assert_eq!(super::closest("prot", ["port", "protocol"]), Some("port"));
        assert_eq!(super::closest("per", ["burst", "rate"]), None);
        assert_eq!(super::closest("a", ["b"]), None);
        assert_eq!(super::closest("colour", ["status", "protocol"]), None);
        // Nothing close: the message is left as it was.
        let far = "unknown field `colour`, expected `status` or `protocol`";
        assert_eq!(super::suggest(far.to_string()), far);
    }

    #[test]
    fn syntax_errors_have_a_line_and_column() {
        let text = "[admin]\nlisten = \"127.0.0.1:9901\"\n\"é\" = [1,\n";
        let Err(crate::ConfigError::Invalid(errors)) = crate::parse(text, "c.toml".as_ref()) else {
            panic!("{text} parsed");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].line, errors[0].column),
            (Some(4), Some(1)),
            "{errors:?}"
        );
        assert_eq!(super::line_column("ab\n\"é\" = x", 10), (2, 7));
        assert_eq!(super::line_column("abc", 99), (1, 4));
    }
}
