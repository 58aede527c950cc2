//! Human-readable tables and sizes.

/// A plain text table: a header row and aligned columns, right-aligned where numeric.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|cell| cell.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|cell| cell.chars().count()).collect();
        let mut numeric = vec![true; columns];
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(cell.chars().count());
                let looks_numeric = cell.chars().next().is_some_and(|first| first.is_ascii_digit() || first == '$');
                numeric[index] &= looks_numeric || cell == "-";
            }
        }
        let mut text = String::new();
        let line = |cells: &[String], text: &mut String| {
            let rendered: Vec<String> = cells
                .iter()
                .enumerate()
                .take(columns)
                .map(|(index, cell)| {
                    if numeric[index] {
                        format!("{cell:>width$}", width = widths[index])
                    } else {
                        format!("{cell:<width$}", width = widths[index])
                    }
                })
                .collect();
            text.push_str(rendered.join("  ").trim_end());
            text.push('\n');
        };
        line(&self.header, &mut text);
        for row in &self.rows {
            line(row, &mut text);
        }
        text
    }
}

/// Bytes in binary units: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Thousands separators: `21,000`.
pub fn thousands(count: u64) -> String {
    let digits = count.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["partition", "objects"]);
        table.row(vec!["a/2024/01/01/".into(), "5".into()]);
        table.row(vec!["b/".into(), "12,345".into()]);
        let rendered = table.render();
        assert_eq!(rendered, "partition      objects\na/2024/01/01/        5\nb/              12,345\n");
    }

    #[test]
    fn sizes_and_counts_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(128 << 20), "128.0 MiB");
        assert_eq!(thousands(21000), "21,000");
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
