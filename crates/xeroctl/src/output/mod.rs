//! How answers are printed: `-o table|wide|json|yaml|name` and `--no-headers`, for listings
//! and single objects alike. Tables are plain aligned columns unless stdout is a terminal.

mod table;

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::cli::OutputFormat;

/// A column of a listing; `wide` columns show only with `-o wide`.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub wide: bool,
}

/// A column shown in every table.
pub const fn col(header: &'static str) -> Column {
    Column { header, wide: false }
}

/// A column shown only with `-o wide`.
pub const fn wide(header: &'static str) -> Column {
    Column { header, wide: true }
}

/// The output settings of this invocation of xeroctl.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: OutputFormat,
    pub headers: bool,
    /// stdout is a terminal: tables get borders.
    pub terminal: bool,
}

impl Printer {
    pub fn new(format: OutputFormat, no_headers: bool) -> Self {
        Self { format, headers: !no_headers, terminal: std::io::stdout().is_terminal() }
    }

    /// `-o json` or `-o yaml`: the router's answer as data.
    pub fn is_data(&self) -> bool {
        matches!(self.format, OutputFormat::Json | OutputFormat::Yaml)
    }

    /// Refuses `-o name` for a command whose answer holds a secret shown only once (a key's
    /// value, a join token): printing only the name would lose it for good.
    pub fn refuse_name_for_secret(&self, what: &str) -> anyhow::Result<()> {
        if self.format == OutputFormat::Name {
            return Err(crate::exit::usage(format!(
                "-o name would not print the {what}, which is shown only once; use -o table, json \
                 or yaml"
            )));
        }
        Ok(())
    }

    /// `-o table` or `-o wide`: text for people.
    pub fn is_text(&self) -> bool {
        matches!(self.format, OutputFormat::Table | OutputFormat::Wide)
    }

    /// `value` as JSON (pretty) or YAML.
    pub fn data<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let text = match self.format {
            OutputFormat::Yaml => serde_norway::to_string(value)?,
            _ => serde_json::to_string_pretty(value)? + "\n",
        };
        write_stdout(&text)
    }

    /// `kind/id` lines (`-o name`).
    pub fn names<'a>(
        &self,
        kind: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<()> {
        let text: String = ids.into_iter().map(|id| format!("{kind}/{id}\n")).collect();
        write_stdout(&text)
    }

    /// Lines as given (`-o name` for items whose kind differs line by line).
    pub fn names_plain<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        let text: String = names.into_iter().map(|n| format!("{n}\n")).collect();
        write_stdout(&text)
    }

    /// A listing: `whole` (the page as the router sent it) as data, `kind/id` per item, or a
    /// table of `cells` under `columns` (wide ones with `-o wide` only).
    pub fn list<T>(
        &self,
        whole: &impl Serialize,
        kind: &str,
        items: &[T],
        columns: &[Column],
        id: impl Fn(&T) -> String,
        cells: impl Fn(&T) -> Vec<String>,
    ) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json | OutputFormat::Yaml => self.data(whole),
            OutputFormat::Name => {
                let ids: Vec<String> = items.iter().map(id).collect();
                self.names(kind, ids.iter().map(String::as_str))
            }
            OutputFormat::Table | OutputFormat::Wide => {
                self.table(columns, items.iter().map(cells).collect())
            }
            OutputFormat::Csv => self.csv(columns, items.iter().map(cells).collect()),
        }
    }

    /// RFC 4180: every column (wide ones too), a header row unless `--no-headers`, CRLF line
    /// ends, a field quoted when it holds a comma, a quote or a line break (quotes doubled).
    pub fn csv(&self, columns: &[Column], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
        let line = |fields: Vec<String>| {
            fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\r\n"
        };
        let mut text = String::new();
        if self.headers {
            text.push_str(&line(columns.iter().map(|c| c.header.to_string()).collect()));
        }
        for row in rows {
            text.push_str(&line(row));
        }
        write_stdout(&text)
    }

    /// One object: `value` as data, `kind/id`, or `text` (which prints it for people).
    pub fn object<T: Serialize>(
        &self,
        value: &T,
        kind: &str,
        id: &str,
        text: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json | OutputFormat::Yaml => self.data(value),
            OutputFormat::Name => self.names(kind, [id]),
            OutputFormat::Table | OutputFormat::Wide | OutputFormat::Csv => text(),
        }
    }

    /// Rows under `columns`, dropping wide columns unless `-o wide`.
    pub fn table(&self, columns: &[Column], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
        let wide = self.format == OutputFormat::Wide;
        let keep: Vec<bool> = columns.iter().map(|c| wide || !c.wide).collect();
        let headers: Vec<&str> =
            columns.iter().zip(&keep).filter(|(_, k)| **k).map(|(c, _)| c.header).collect();
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|row| row.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(c, _)| c).collect())
            .collect();
        let headers = self.headers.then_some(headers.as_slice());
        let text =
            if self.terminal { table::boxed(headers, &rows) } else { table::plain(headers, &rows) };
        write_stdout(&text)
    }
}

/// One RFC 4180 field.
pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `key: value` lines, aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        println!("{key:<width$}  {value}", width = width + 1, key = format!("{key}:"));
    }
}

pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// Tells the operator there is another page and how to get it.
pub fn more_hint(next_after: Option<&str>) {
    if let Some(after) = next_after {
        eprintln!("(more results: repeat with --after {after})");
    }
}
