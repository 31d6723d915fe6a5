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
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                let cells = self.rows.iter().map(|r| width(&r[i]));
                cells.chain([width(self.header[i])]).max().unwrap_or(0)
            })
            .collect();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (cell, w) in row.iter().zip(&widths) {
                line.push_str(cell);
                line.push_str(&" ".repeat(w - width(cell) + 2));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
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
}
