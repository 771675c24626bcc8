//! How commands print: text for people, or JSON for scripts (`--json`),
//! decided once from the command line. Progress goes to stderr; stdout
//! holds only the answer.

use std::io::Write;

use serde::Serialize;

/// What a command prints its answer as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

impl Output {
    pub fn is_json(self) -> bool {
        self == Output::Json
    }

    /// `value` as JSON; or, for people, what `text` writes.
    pub fn print<T: Serialize + ?Sized>(
        self,
        value: &T,
        text: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match self {
            Output::Json => print_json(value),
            Output::Text => text(&mut std::io::stdout().lock()),
        }
    }

    /// A listing: a JSON array of `json(item)`; or a table under `header`,
    /// one `row` per item, or the line `empty` when there is none.
    pub fn listing<'a, T, J: Serialize>(
        self,
        items: &'a [T],
        json: impl Fn(&'a T) -> J,
        header: &[&str],
        row: impl Fn(&T) -> Vec<String>,
        empty: &str,
    ) -> anyhow::Result<()> {
        if self.is_json() {
            return print_json(&items.iter().map(json).collect::<Vec<_>>());
        }
        if items.is_empty() {
            writeln!(std::io::stdout().lock(), "{empty}")?;
            return Ok(());
        }
        let mut rows = vec![header.iter().map(|h| h.to_string()).collect()];
        rows.extend(items.iter().map(row));
        print_table(&rows)
    }

    /// Where a command's running commentary goes: stdout for people; stderr
    /// when stdout is for the final JSON document.
    pub fn lines(self) -> Box<dyn Write> {
        match self {
            Output::Json => Box::new(std::io::stderr()),
            Output::Text => Box::new(std::io::stdout()),
        }
    }
}

/// Pretty-printed JSON and a newline on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn print_table(rows: &[Vec<String>]) -> anyhow::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
