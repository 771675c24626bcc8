//! The account a service runs as: a user name or uid resolved through
//! /etc/passwd. Parsed here rather than through libc's getpwnam, which is
//! not thread-safe and needs unsafe code; /etc/passwd is where the
//! provisioning (chef, useradd) puts service accounts.

use std::path::Path;

/// Where accounts are read from.
pub(crate) const PASSWD: &str = "/etc/passwd";

/// An account to run a service as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Resolves `user` (a name, or a numeric uid) against the text of an
/// /etc/passwd. A uid with no entry still resolves, with its own number as
/// gid and `/` as home, as container runtimes do for a bare `--user 1234`.
pub(crate) fn resolve(user: &str, passwd: &str) -> Result<Account, String> {
    let numeric = user.parse::<u32>().ok();
    let found = entries(passwd).find(|a| match numeric {
        Some(uid) => a.uid == uid,
        None => a.name == user,
    });
    match (found, numeric) {
        (Some(account), _) => Ok(account),
        (None, Some(uid)) => Ok(Account { name: user.to_owned(), uid, gid: uid, home: "/".to_owned() }),
        (None, None) => Err(format!("no user `{user}` in {PASSWD}; create it, or give a numeric uid")),
    }
}

/// [`resolve`] against the file at `path`.
pub(crate) fn resolve_in(user: &str, path: &Path) -> Result<Account, String> {
    let passwd = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    resolve(user, &passwd)
}

/// The well-formed entries of a passwd file, in order: `name:password:uid:
/// gid:gecos:home:shell`. Comments, blank lines, NIS `+`/`-` lines and lines
/// with a non-numeric id are skipped; the first entry for a name wins, as
/// with getpwnam.
fn entries(passwd: &str) -> impl Iterator<Item = Account> + '_ {
    passwd.lines().filter_map(entry)
}

fn entry(line: &str) -> Option<Account> {
    if line.starts_with(['#', '+', '-']) {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _password, uid, gid, _gecos, home, _shell] = fields[..] else {
        return None;
    };
    if name.is_empty() {
        return None;
    }
    Some(Account { name: name.to_owned(), uid: uid.parse().ok()?, gid: gid.parse().ok()?, home: home.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment, then a blank line

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken:x:abc:1:bad uid:/:/bin/sh
short:x:5:5
+nisuser::::::
app:x:1001:1002:The App,,,:/srv/app:/bin/sh
app:x:2001:2002:shadowed by the first:/nowhere:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

    fn account(name: &str, uid: u32, gid: u32, home: &str) -> Account {
        Account { name: name.to_owned(), uid, gid, home: home.to_owned() }
    }

    #[test]
    fn names_resolve_to_their_first_entry() {
        assert_eq!(resolve("app", PASSWD_TEXT), Ok(account("app", 1001, 1002, "/srv/app")));
        assert_eq!(resolve("nobody", PASSWD_TEXT), Ok(account("nobody", 65534, 65534, "/nonexistent")));
        assert_eq!(resolve("root", PASSWD_TEXT), Ok(account("root", 0, 0, "/root")));
    }

    #[test]
    fn a_uid_resolves_to_its_entry_or_stands_alone() {
        assert_eq!(resolve("1", PASSWD_TEXT), Ok(account("daemon", 1, 1, "/usr/sbin")));
        assert_eq!(resolve("4242", PASSWD_TEXT), Ok(account("4242", 4242, 4242, "/")));
    }

    #[test]
    fn malformed_lines_are_skipped_and_unknown_names_are_errors() {
        for skipped in ["broken", "short", "+nisuser", "nisuser", "# a comment", ""] {
            let error = resolve(skipped, PASSWD_TEXT).unwrap_err();
            assert_eq!(error, format!("no user `{skipped}` in /etc/passwd; create it, or give a numeric uid"));
        }
        assert_eq!(entries(PASSWD_TEXT).count(), 5);
    }

    #[test]
    fn an_unreadable_file_says_which() {
        let error = resolve_in("app", Path::new("/nonexistent/passwd")).unwrap_err();
        assert!(error.starts_with("reading /nonexistent/passwd: "), "{error}");
    }
}
