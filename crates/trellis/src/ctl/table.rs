//! Plain-text tables: a header row and columns padded to their widest cell, two spaces apart.

pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are `-`, extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.header.len(), "-".to_owned());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every line ends with `\n`; none has trailing spaces (the last column is not padded).
    pub fn render(&self) -> String {
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        lines(
            std::iter::once(&header).chain(&self.rows),
            self.header.len(),
            "",
        )
    }

    /// The rows alone, each line after `indent`, columns as wide as their widest cell (the header
    /// plays no part): for lists under a heading of their own, such as a group's recent activities.
    pub fn render_rows(&self, indent: &str) -> String {
        lines(self.rows.iter(), self.header.len(), indent)
    }
}

fn lines<'a>(
    rows: impl Iterator<Item = &'a Vec<String>> + Clone,
    columns: usize,
    indent: &str,
) -> String {
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.clone().map(|r| width(&r[i])).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_owned();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.push_str(&" ".repeat(w - width(cell) + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Characters, not bytes: host names and reasons may hold non-ASCII text.
fn width(cell: &str) -> usize {
    cell.chars().count()
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&["NAME", "STATE", "REASON"]);
        t.row(vec!["a-long-name".into(), "ok".into(), "fine".into()]);
        t.row(vec!["b".into(), "unhealthy".into()]);
        assert_eq!(
            t.render(),
            "NAME         STATE      REASON\n\
             a-long-name  ok         fine\n\
             b            unhealthy  -\n"
        );
    }

    #[test]
    fn rows_alone_are_indented_and_as_wide_as_their_own_cells() {
        let mut t = Table::new(&["A-VERY-WIDE-HEADER", "KIND", "TEXT"]);
        t.row(vec!["x".into(), "scale".into(), "up".into()]);
        t.row(vec!["yy".into(), "launch_failed".into()]);
        assert_eq!(
            t.render_rows("  "),
            concat!("  x   scale          up\n", "  yy  launch_failed  -\n")
        );
        assert_eq!(Table::new(&["A"]).render_rows("  "), "");
    }
}
