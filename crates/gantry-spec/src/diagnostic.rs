//! Source files, spans and user-facing diagnostics (what is wrong, where, how to fix it).
//!
//! Every error Gantry reports about a user's repository is a [`Diagnostic`]:
//! a message, an optional span into one of the repository's files, and an
//! optional help line. Rendering shows `file:line:column`, the offending line
//! and a caret under the span, in the style of rustc.

use std::fmt;

/// One file of the user's repository, by its path relative to the repository root.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// All files a load read, so diagnostics can quote them.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(u32);

/// A byte range in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

/// A line and column, both counted from 1; columns count characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

/// One problem in the user's repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// Where the problem is; `None` for problems that belong to no file
    /// (a missing file, an unknown group named on the command line).
    pub span: Option<Span>,
    /// How to fix it.
    pub help: Option<String>,
}

/// A non-empty list of problems, in the order they were found (files in
/// load order, positions ascending within a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl SourceMap {
    pub fn add(&mut self, path: impl Into<String>, text: impl Into<String>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).expect("fewer than 4 billion files"));
        self.files.push(SourceFile { path: path.into(), text: text.into() });
        id
    }

    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }

    /// Line and column of a byte offset in a file.
    pub fn line_col(&self, file: FileId, offset: usize) -> LineCol {
        let text = &self.file(file).text;
        let offset = offset.min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        LineCol { line, column }
    }

    /// Renders diagnostics for a terminal, one block per diagnostic.
    pub fn render(&self, diagnostics: &Diagnostics) -> String {
        let mut out = String::new();
        for d in &diagnostics.0 {
            self.render_one(d, &mut out);
        }
        let n = diagnostics.0.len();
        if n > 1 {
            out.push_str(&format!("error: found {n} problems\n"));
        }
        out
    }

    fn render_one(&self, d: &Diagnostic, out: &mut String) {
        out.push_str(&format!("error: {}\n", d.message));
        if let Some(span) = d.span {
            let file = self.file(span.file);
            let LineCol { line, column } = self.line_col(span.file, span.start);
            let gutter = " ".repeat(line.to_string().len());
            out.push_str(&format!("{gutter}--> {}:{line}:{column}\n", file.path));
            let text = file.text.lines().nth(line - 1).unwrap_or("");
            // Underline to the end of the span, or of the line when the span
            // runs over several lines; at least one caret.
            let span_chars = file.text[floor_char_boundary(&file.text, span.start)
                ..floor_char_boundary(&file.text, span.end.max(span.start))]
                .chars()
                .take_while(|&c| c != '\n')
                .count();
            let carets = span_chars.max(1);
            out.push_str(&format!("{gutter} |\n{line} | {}\n", text.replace('\t', " ")));
            out.push_str(&format!("{gutter} | {}{}\n", " ".repeat(column - 1), "^".repeat(carets)));
        }
        if let Some(help) = &d.help {
            let gutter = match d.span {
                Some(span) => " ".repeat(self.line_col(span.file, span.start).line.to_string().len()),
                None => String::new(),
            };
            out.push_str(&format!("{gutter} = help: {help}\n"));
        }
    }
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic { message: message.into(), span: None, help: None }
    }

    pub fn at(mut self, span: Span) -> Diagnostic {
        self.span = Some(span);
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
}

impl Diagnostics {
    pub fn single(d: Diagnostic) -> Diagnostics {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    /// Messages only; use [`SourceMap::render`] for the version with locations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&d.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Accumulates diagnostics while a load goes on, so one run reports every
/// problem rather than the first.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    diagnostics: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn push(&mut self, d: Diagnostic) {
        // The same value can be checked once per group after a merge
        // (a bad `__base__` key); report it once.
        if !self.diagnostics.contains(&d) {
            self.diagnostics.push(d);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.diagnostics.len()
    }

    pub(crate) fn finish(mut self) -> Result<(), Diagnostics> {
        if self.diagnostics.is_empty() {
            return Ok(());
        }
        self.diagnostics.sort_by_key(|d| d.span.map(|s| (s.file, s.start)));
        Err(Diagnostics(self.diagnostics))
    }
}

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let score = strsim::jaro_winkler(&lower, &c.to_ascii_lowercase());
            (c, score)
        })
        .filter(|&(_, score)| score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}
