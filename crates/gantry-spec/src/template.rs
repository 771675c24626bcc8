//! Placeholder templates in `requires` and `provides` (seed 001):
//! `"http://{HOST}:{PORT}/mount"`, `"{PRIMARY_DATABASE_URL}"`.
//!
//! A placeholder is `{NAME}` with NAME an environment-variable name; `{{` and
//! `}}` stand for literal braces.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

/// A parsed template: literal text and placeholders, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(String),
}

/// Why a template does not parse; `offset` is the byte offset in the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(close) = rest.find('}') else {
                        return Err(TemplateError {
                            offset: i,
                            message: "unclosed `{`: write `{NAME}`, or `{{` for a literal brace".to_string(),
                        });
                    };
                    let name = &rest[..close];
                    if !is_env_name(name) {
                        return Err(TemplateError {
                            offset: i,
                            message: format!(
                                "`{{{name}}}` is not a placeholder: names are letters, digits and `_`, not starting with a digit"
                            ),
                        });
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Placeholder(name.to_string()));
                    // Skip the name and the closing brace.
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(TemplateError {
                        offset: i,
                        message: "unmatched `}`: write `}}` for a literal brace".to_string(),
                    });
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { source: source.to_string(), parts })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Placeholder names, in order of appearance (with repeats).
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Fills in every placeholder; the first name with no value is the error.
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Placeholder(name) => match values.get(name) {
                    Some(v) => out.push_str(v),
                    None => return Err(name.clone()),
                },
            }
        }
        Ok(out)
    }
}

/// Environment-variable names: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let t = Template::parse("http://{HOST}:{PORT}/m{{x}}").unwrap();
        assert_eq!(t.placeholders().collect::<Vec<_>>(), ["HOST", "PORT"]);
        let values =
            BTreeMap::from([("HOST".to_string(), "10.0.0.1".to_string()), ("PORT".to_string(), "1100".to_string())]);
        assert_eq!(t.render(&values).unwrap(), "http://10.0.0.1:1100/m{x}");
        assert_eq!(t.render(&BTreeMap::new()), Err("HOST".to_string()));
    }

    #[test]
    fn rejects_malformed() {
        let e = Template::parse("http://{HOST").unwrap_err();
        assert_eq!(e.offset, 7);
        assert!(e.message.starts_with("unclosed `{`"));
        let e = Template::parse("a}b").unwrap_err();
        assert_eq!(e.offset, 1);
        let e = Template::parse("{DB-URL}").unwrap_err();
        assert!(e.message.contains("`{DB-URL}` is not a placeholder"), "{}", e.message);
    }
}
