//! Rendering rows as a table: plain aligned columns (for pipes, files and scripts: no box
//! characters, no colour, like kubectl), or bordered on a terminal.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};

/// Space between two plain columns.
const GAP: &str = "   ";

/// `rows` under `headers` (unless `None`), each column as wide as its widest cell, separated by
/// three spaces, without trailing spaces.
pub fn plain(headers: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let header_row: Option<Vec<String>> =
        headers.map(|h| h.iter().map(|c| (*c).to_string()).collect());
    let all: Vec<&Vec<String>> = header_row.iter().chain(rows.iter()).collect();
    let columns = all.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| all.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The same table with borders, fitted to the terminal.
pub fn boxed(headers: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(headers) = headers {
        table.set_header(headers.iter().copied());
    }
    for row in rows {
        table.add_row(row.clone());
    }
    format!("{table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec!["key_1".into(), "bootstrap".into(), "active".into()],
            vec!["key_22".into(), "ci".into(), "-".into()],
        ]
    }

    #[test]
    fn plain_columns_are_aligned_without_borders() {
        let text = plain(Some(&["ID", "NAME", "STATUS"]), &rows());
        assert_eq!(
            text,
            "ID       NAME        STATUS\n\
             key_1    bootstrap   active\n\
             key_22   ci          -\n"
        );
        assert!(!text.contains(['│', '─', '┆', '|']));
    }

    #[test]
    fn plain_without_headers_has_only_rows() {
        let text = plain(None, &rows());
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("key_1 "));
    }

    #[test]
    fn boxed_has_borders() {
        let text = boxed(Some(&["ID", "NAME", "STATUS"]), &rows());
        assert!(text.contains('│') || text.contains('─'), "{text}");
    }
}
