//! Query strings and request paths, decoded by hand so that a malformed one
//! is a JSON 400 like every other bad input (not a framework rejection in
//! plain text, and not a `%zz` taken literally).

use std::borrow::Cow;
use std::collections::BTreeMap;

use gantry_api::ErrorCode;
use gantry_store::LeaseId;

use crate::error::{ApiError, ApiResult};

/// `a=1&b=x%20y` as an ordered map; repeated keys keep the last value.
pub fn parse(raw: Option<&str>) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return Ok(out) };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?.into_owned(), decode(v)?.into_owned());
    }
    Ok(out)
}

/// One query component: percent-decoding, with `+` as a space (form
/// encoding, as curl sends).
fn decode(s: &str) -> ApiResult<Cow<'_, str>> {
    percent_decode(s, true).map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.message(s)))
}

/// Checks a request's path: every `%` starts an escape of two hex digits,
/// and the decoded path is UTF-8. Allocates only for a path that has escapes.
pub fn check_path(path: &str) -> ApiResult<()> {
    percent_decode(path, false).map(drop).map_err(|e| ApiError::new(ErrorCode::InvalidPath, e.message(path)))
}

/// What is wrong with a percent-encoded string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    /// A `%` not followed by two hex digits.
    Escape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl Malformed {
    fn message(self, s: &str) -> String {
        match self {
            Malformed::Escape => {
                format!(
                    "bad percent-encoding in {s:?}: `%` must start an escape of two hex digits (write `%25` for `%`)"
                )
            }
            Malformed::NotUtf8 => format!("{s:?} does not decode to UTF-8 text"),
        }
    }
}

fn percent_decode(s: &str, plus_is_space: bool) -> Result<Cow<'_, str>, Malformed> {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || (plus_is_space && b == b'+')) {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.ok_or(Malformed::Escape)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| Malformed::NotUtf8)
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

/// A lease id as `POST /v1/leases` hands it out (hex).
pub fn lease(v: &str) -> ApiResult<LeaseId> {
    i64::from_str_radix(v, 16).ok().filter(|id| *id > 0).map(LeaseId).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidLease, format!("{v:?} is not a lease id (hex, as POST /v1/leases returns)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_decode_strictly() {
        assert!(check_path("/v1/kv/a%2Fb/c%20d").is_ok());
        assert!(check_path("/v1/kv/caf%C3%A9").is_ok());
        for bad in ["/v1/kv/%zz", "/v1/kv/a%2", "/v1/kv/%", "/v1/machines/%FF", "/v1/kv/%C3"] {
            assert_eq!(check_path(bad).unwrap_err().code, ErrorCode::InvalidPath, "{bad}");
        }
        let q = parse(Some("a=1+2&b=x%20y&flag&c=%26")).unwrap();
        assert_eq!(q["a"], "1 2");
        assert_eq!(q["b"], "x y");
        assert_eq!(q["flag"], "");
        assert_eq!(q["c"], "&");
        assert_eq!(parse(Some("a=%zz")).unwrap_err().code, ErrorCode::InvalidQuery);
        assert_eq!(parse(Some("a=%ff")).unwrap_err().code, ErrorCode::InvalidQuery);
    }
}
