//! Key, prefix and value validation shared by every engine, so that both
//! engines accept and refuse exactly the same input.

use crate::StoreError;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Largest value accepted, in bytes. etcd refuses requests over 1.5 MiB by
/// default, so 1 MiB leaves room for the key and the request framing.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Most operations (and as many comparisons) in one transaction; etcd's
/// default `--max-txn-ops` is 128.
pub const MAX_TXN_OPS: usize = 128;

/// Checks a key: non-empty, at most [`MAX_KEY_BYTES`], no control characters,
/// `/`-separated segments that are neither empty nor `.` or `..`.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    match key_problem(key) {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidKey { key: shorten(key), reason }),
    }
}

/// Checks a prefix for range, watch and delete: the empty prefix (everything),
/// a valid key, or a valid key followed by one `/`.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    match key_problem(body) {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidKey { key: shorten(prefix), reason }),
    }
}

/// Checks a value's size.
pub fn validate_value(key: &str, value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::ValueTooLarge { key: shorten(key), size: value.len(), limit: MAX_VALUE_BYTES });
    }
    Ok(())
}

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("a key must not be empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return Some("a key must be at most 1024 bytes");
    }
    if key.chars().any(char::is_control) {
        return Some("a key must not contain control characters (NUL, newline, tab, ...)");
    }
    for segment in key.split('/') {
        match segment {
            "" => return Some("a key must not start or end with '/' nor contain '//'"),
            "." | ".." => return Some("a key must not contain '.' or '..' segments"),
            _ => {}
        }
    }
    None
}

/// Error messages quote the key; a rejected key may be huge, so cut it.
fn shorten(key: &str) -> String {
    const SHOWN: usize = 80;
    match key.char_indices().nth(SHOWN) {
        None => key.to_owned(),
        Some((end, _)) => format!("{}...", &key[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in ["machines/web-1", "a", "kv/datastores/PRIMARY_DATABASE_URL", "x.y/z..w", "é/ü"] {
            assert!(validate_key(key).is_ok(), "{key:?} should be valid");
        }
    }

    #[test]
    fn refuses_bad_keys() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        for key in ["", "/a", "a/", "a//b", "a/./b", "../a", "a/..", "a\0b", "a\nb", long.as_str()] {
            let err = validate_key(key).expect_err(key);
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{key:?}: {err}");
        }
    }

    #[test]
    fn prefixes_may_end_with_a_slash_or_be_empty() {
        for prefix in ["", "machines/", "machines", "instances/mysql/"] {
            assert!(validate_prefix(prefix).is_ok(), "{prefix:?} should be valid");
        }
        for prefix in ["/", "a//", "..", "a\tb/"] {
            assert!(validate_prefix(prefix).is_err(), "{prefix:?} should be invalid");
        }
    }

    #[test]
    fn values_over_the_limit_are_refused() {
        assert!(validate_value("k", &vec![0; MAX_VALUE_BYTES]).is_ok());
        let err = validate_value("k", &vec![0; MAX_VALUE_BYTES + 1]).unwrap_err();
        assert_eq!(err.to_string(), "value for key \"k\" is 1048577 bytes, over the limit of 1048576 bytes");
    }

    #[test]
    fn error_messages_cut_long_keys() {
        let err = validate_key(&"k".repeat(2000)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
