//! Strict JSON with a span on every value and key, so that errors found after
//! parsing (unknown keys, wrong types, bad run-list items) can still point at
//! `file:line:column`.
//!
//! Parsing is delegated to `jsonc-parser` with every extension turned off;
//! this module turns its AST into an owned tree and its syntax errors into
//! diagnostics that say how to fix the mistake (the seed's own nodes.json has
//! a missing comma and single-quoted strings, so these are common).

use jsonc_parser::ParseOptions;
use jsonc_parser::ast;
use jsonc_parser::errors::ParseErrorKind;

use crate::diagnostic::{Diagnostic, FileId, Span};

/// A JSON value with the span it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Json {
    pub span: Span,
    pub kind: JsonKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JsonKind {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<Member>),
}

/// One `"key": value` pair of an object, in source order.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    pub key_span: Span,
    pub value: Json,
}

impl Json {
    /// The JSON type's name as a user would say it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            JsonKind::Null => "null",
            JsonKind::Bool(_) => "a boolean",
            JsonKind::Number(_) => "a number",
            JsonKind::String(_) => "a string",
            JsonKind::Array(_) => "a list",
            JsonKind::Object(_) => "an object",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            JsonKind::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[Member]> {
        match &self.kind {
            JsonKind::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The plain value, without spans.
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            JsonKind::Null => Value::Null,
            JsonKind::Bool(b) => Value::Bool(*b),
            JsonKind::Number(n) => Value::Number(n.clone()),
            JsonKind::String(s) => Value::String(s.clone()),
            JsonKind::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            JsonKind::Object(members) => {
                Value::Object(members.iter().map(|m| (m.key.clone(), m.value.to_value())).collect())
            }
        }
    }
}

/// Parses one file's text. Syntax errors and duplicate keys are diagnostics.
pub fn parse(file: FileId, text: &str) -> Result<Json, Vec<Diagnostic>> {
    let options = ParseOptions {
        allow_comments: false,
        allow_loose_object_property_names: false,
        allow_trailing_commas: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    let parsed = jsonc_parser::parse_to_ast(text, &Default::default(), &options)
        .map_err(|e| vec![syntax_error(file, text, &e)])?;
    let Some(root) = parsed.value else {
        let span = Span { file, start: 0, end: text.len() };
        return Err(vec![
            Diagnostic::new("the file is empty; expected a JSON object")
                .at(span)
                .help("write `{}` for an empty object"),
        ]);
    };
    let mut problems = Vec::new();
    let json = convert(file, root, &mut problems);
    if problems.is_empty() { Ok(json) } else { Err(problems) }
}

fn convert(file: FileId, value: ast::Value<'_>, problems: &mut Vec<Diagnostic>) -> Json {
    let span_of = |r: jsonc_parser::common::Range| Span { file, start: r.start, end: r.end };
    match value {
        ast::Value::NullKeyword(n) => Json { span: span_of(n.range), kind: JsonKind::Null },
        ast::Value::BooleanLit(b) => Json { span: span_of(b.range), kind: JsonKind::Bool(b.value) },
        ast::Value::StringLit(s) => Json { span: span_of(s.range), kind: JsonKind::String(s.value.into_owned()) },
        ast::Value::NumberLit(n) => {
            let span = span_of(n.range);
            // The parser has checked the literal's grammar; serde_json turns it
            // into a number (arbitrary precision is not needed for specs).
            let number = serde_json::from_str::<serde_json::Number>(n.value).unwrap_or_else(|_| {
                problems.push(Diagnostic::new(format!("`{}` is not a number JSON can represent", n.value)).at(span));
                serde_json::Number::from(0)
            });
            Json { span, kind: JsonKind::Number(number) }
        }
        ast::Value::Array(a) => Json {
            span: span_of(a.range),
            kind: JsonKind::Array(a.elements.into_iter().map(|v| convert(file, v, problems)).collect()),
        },
        ast::Value::Object(o) => {
            let span = span_of(o.range);
            let mut members: Vec<Member> = Vec::with_capacity(o.properties.len());
            for prop in o.properties {
                let (key, key_range) = match prop.name {
                    ast::ObjectPropName::String(s) => (s.value.into_owned(), s.range),
                    ast::ObjectPropName::Word(w) => (w.value.to_string(), w.range),
                };
                let key_span = span_of(key_range);
                if members.iter().any(|m| m.key == key) {
                    problems.push(
                        Diagnostic::new(format!("duplicate key \"{key}\" in this object"))
                            .at(key_span)
                            .help("a key may appear once per object: remove one of the two"),
                    );
                    continue;
                }
                let value = convert(file, prop.value, problems);
                members.push(Member { key, key_span, value });
            }
            Json { span, kind: JsonKind::Object(members) }
        }
    }
}

fn syntax_error(file: FileId, text: &str, e: &jsonc_parser::errors::ParseError) -> Diagnostic {
    let range = e.range();
    let span = Span { file, start: range.start, end: range.end };
    let (what, help) = match e.kind() {
        ParseErrorKind::SingleQuotedStringsNotAllowed => (
            "single-quoted string".to_string(),
            "JSON strings use double quotes: replace '...' with \"...\"".to_string(),
        ),
        ParseErrorKind::ExpectedComma => (
            "missing comma".to_string(),
            "add a `,` after the previous item: JSON needs a comma between items".to_string(),
        ),
        ParseErrorKind::TrailingCommasNotAllowed => (
            "trailing comma".to_string(),
            "remove the `,` after the last item: JSON does not allow trailing commas".to_string(),
        ),
        ParseErrorKind::CommentsNotAllowed | ParseErrorKind::UnterminatedCommentBlock => (
            "comment".to_string(),
            "JSON has no comments: remove it, or put the note in a \"description\" field".to_string(),
        ),
        ParseErrorKind::ExpectedStringObjectProperty => (
            "object key is not a double-quoted string".to_string(),
            "write keys in double quotes: \"key\": value".to_string(),
        ),
        ParseErrorKind::ExpectedColonAfterObjectKey => {
            ("missing `:` after an object key".to_string(), "write \"key\": value".to_string())
        }
        ParseErrorKind::UnterminatedObject => ("unterminated object".to_string(), "add the missing `}`".to_string()),
        ParseErrorKind::UnterminatedArray => ("unterminated list".to_string(), "add the missing `]`".to_string()),
        ParseErrorKind::UnexpectedWord => {
            let word = text.get(range.start..range.end).unwrap_or("");
            (
                format!("unexpected word `{word}`"),
                "strings need double quotes; the only bare words in JSON are true, false and null".to_string(),
            )
        }
        other => (other.to_string().to_lowercase(), "check the JSON syntax around this position".to_string()),
    };
    Diagnostic::new(format!("invalid JSON: {what}")).at(span).help(help)
}
