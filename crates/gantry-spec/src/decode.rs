//! Typed reading of spanned JSON objects, reporting unknown keys (with the
//! nearest known key) and wrong types at the value's position.

use std::collections::BTreeMap;

use crate::diagnostic::{Diagnostic, Sink, nearest};
use crate::json::{Json, JsonKind, Member};

/// Reports every key of `members` that is not in `known`.
pub(crate) fn check_keys(members: &[Member], known: &[&str], what: &str, sink: &mut Sink) {
    for m in members {
        if known.contains(&m.key.as_str()) {
            continue;
        }
        let help = match nearest(&m.key, known.iter().copied()) {
            Some(near) => format!("did you mean \"{near}\"?"),
            None => format!("known keys: {}", known.join(", ")),
        };
        sink.push(Diagnostic::new(format!("unknown key \"{}\" in {what}", m.key)).at(m.key_span).help(help));
    }
}

pub(crate) fn get<'a>(members: &'a [Member], key: &str) -> Option<&'a Json> {
    members.iter().find(|m| m.key == key).map(|m| &m.value)
}

/// A "wrong type" diagnostic with a hint that fits the mismatch.
pub(crate) fn type_error(key: &str, expected: &str, found: &Json) -> Diagnostic {
    let help = match (expected, &found.kind) {
        ("a string", JsonKind::Number(n)) => {
            format!("put the value in double quotes: \"{key}\": \"{n}\"")
        }
        ("a string", JsonKind::Bool(b)) => {
            format!("put the value in double quotes: \"{key}\": \"{b}\"")
        }
        ("a list of strings", JsonKind::String(s)) => {
            format!("make it a list: \"{key}\": [\"{s}\"]")
        }
        ("a number", JsonKind::String(s)) => format!("remove the quotes: \"{key}\": {s}"),
        _ => format!("\"{key}\" must be {expected}"),
    };
    Diagnostic::new(format!("wrong type for \"{key}\": expected {expected}, found {}", found.type_name()))
        .at(found.span)
        .help(help)
}

pub(crate) fn string(key: &str, value: &Json, sink: &mut Sink) -> Option<String> {
    match &value.kind {
        JsonKind::String(s) => Some(s.clone()),
        _ => {
            sink.push(type_error(key, "a string", value));
            None
        }
    }
}

pub(crate) fn boolean(key: &str, value: &Json, sink: &mut Sink) -> Option<bool> {
    match &value.kind {
        JsonKind::Bool(b) => Some(*b),
        _ => {
            sink.push(type_error(key, "true or false", value));
            None
        }
    }
}

/// A whole number in `0..=max`.
pub(crate) fn integer(key: &str, value: &Json, max: u64, sink: &mut Sink) -> Option<u64> {
    match &value.kind {
        JsonKind::Number(n) => match n.as_u64() {
            Some(v) if v <= max => Some(v),
            _ => {
                sink.push(
                    Diagnostic::new(format!("\"{key}\" must be a whole number from 0 to {max}, found {n}"))
                        .at(value.span)
                        .help(format!("write a number between 0 and {max}")),
                );
                None
            }
        },
        _ => {
            sink.push(type_error(key, "a number", value));
            None
        }
    }
}

/// A non-negative number, fractions allowed.
pub(crate) fn number(key: &str, value: &Json, sink: &mut Sink) -> Option<f64> {
    match &value.kind {
        JsonKind::Number(n) => match n.as_f64() {
            Some(v) if v >= 0.0 => Some(v),
            _ => {
                sink.push(Diagnostic::new(format!("\"{key}\" must not be negative, found {n}")).at(value.span));
                None
            }
        },
        _ => {
            sink.push(type_error(key, "a number", value));
            None
        }
    }
}

/// A list of strings, each with its span.
pub(crate) fn string_list<'a>(key: &str, value: &'a Json, sink: &mut Sink) -> Option<Vec<(&'a str, &'a Json)>> {
    let JsonKind::Array(items) = &value.kind else {
        sink.push(type_error(key, "a list of strings", value));
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match &item.kind {
            JsonKind::String(s) => out.push((s.as_str(), item)),
            _ => {
                sink.push(type_error(&format!("{key}[]"), "a string", item));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

pub(crate) fn object<'a>(key: &str, value: &'a Json, sink: &mut Sink) -> Option<&'a [Member]> {
    match &value.kind {
        JsonKind::Object(members) => Some(members),
        _ => {
            sink.push(type_error(key, "an object", value));
            None
        }
    }
}

/// An object whose values are scalars written out as strings (environment
/// variables, datastores): `"PORT": 8080` is `"8080"`.
pub(crate) fn scalar_map(key: &str, value: &Json, sink: &mut Sink) -> Option<BTreeMap<String, String>> {
    let members = object(key, value, sink)?;
    let mut out = BTreeMap::new();
    for m in members {
        let text = match &m.value.kind {
            JsonKind::String(s) => s.clone(),
            JsonKind::Number(n) => n.to_string(),
            JsonKind::Bool(b) => b.to_string(),
            _ => {
                sink.push(type_error(&m.key, "a string, number or boolean", &m.value));
                continue;
            }
        };
        out.insert(m.key.clone(), text);
    }
    Some(out)
}
