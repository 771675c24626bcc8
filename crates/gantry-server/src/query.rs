//! Query strings, parsed by hand so that a malformed one is a JSON 400 like
//! every other bad input (not a framework rejection in plain text).

use std::collections::BTreeMap;

use gantry_api::ErrorCode;

use crate::error::{ApiError, ApiResult};

/// `a=1&b=x%20y` as an ordered map; repeated keys keep the last value.
pub fn parse(raw: Option<&str>) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return Ok(out) };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

/// Percent-decoding, with `+` as a space (form encoding, as curl sends).
pub fn decode(s: &str) -> ApiResult<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(b) = hex else {
                    return Err(ApiError::new(ErrorCode::InvalidQuery, format!("bad percent-encoding in {s:?}")));
                };
                out.push(b);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::new(ErrorCode::InvalidQuery, format!("{s:?} is not UTF-8")))
}

/// A whole number from the query, or a 400 naming the parameter.
pub fn number(query: &BTreeMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    query
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::new(ErrorCode::InvalidQuery, format!("?{name}= must be a whole number, found {v:?}"))
            })
        })
        .transpose()
}

/// A boolean flag: present and not `false`/`0`.
pub fn flag(query: &BTreeMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v != "false" && v != "0")
}
