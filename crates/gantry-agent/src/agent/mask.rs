//! What an agent publishes never carries a secret: provision output, check
//! output and process problems are free text a command wrote, and a
//! command that echoes its environment would publish the database password
//! it was given. Every datastore value the node knows is replaced by
//! `****` wherever it appears, before the status leaves the node; so is
//! the password of any `scheme://user:password@host` URL.

use gantry_api::AgentStatus;

/// Values shorter than this are not masked: a datastore `1` or `on` would
/// otherwise blank every digit of a log. Such values are not secrets.
pub const MIN_SECRET_LEN: usize = 4;

const MASK: &str = "****";

/// `status` with every occurrence of each of `secrets` (and URL passwords)
/// in its free text replaced by `****`.
pub fn mask_status<'a>(status: &mut AgentStatus, secrets: impl IntoIterator<Item = &'a str>) {
    let mut secrets: Vec<&str> = secrets.into_iter().filter(|s| s.len() >= MIN_SECRET_LEN).collect();
    // Longest first: a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mask = |text: &mut String| *text = mask_text(text, &secrets);
    if let Some(listener) = &mut status.listener
        && let Some(run) = &mut listener.last_run
    {
        mask(&mut run.output_tail);
        run.error.iter_mut().for_each(mask);
        run.reasons.iter_mut().for_each(mask);
    }
    for state in status.processes.values_mut() {
        if let Some(process) = &mut state.process {
            process.problem.iter_mut().for_each(mask);
            process.last_exit.iter_mut().for_each(mask);
        }
        if let Some(check) = &mut state.check {
            check.last_output.iter_mut().for_each(mask);
        }
    }
    status.problems.iter_mut().for_each(mask);
    if let Some(deploy) = &mut status.last_deploy {
        mask(&mut deploy.detail);
    }
    if let Some(lb) = &mut status.lb {
        lb.error.iter_mut().for_each(mask);
    }
}

/// `text` with each secret, and each URL's password, masked.
pub fn mask_text(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if out.contains(secret) {
            out = out.replace(secret, MASK);
        }
    }
    mask_url_passwords(&out)
}

/// `scheme://user:password@` -> `scheme://user:****@`, anywhere in a text.
fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first `/`, whitespace or quote.
        let end = tail.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"').unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_url_passwords_are_masked_wherever_they_appear() {
        let secrets = ["s3cret-pass", "api-key-12345"];
        let text = "DATABASE_URL=mysql://app:s3cret-pass@db:3306/app\nKEY=api-key-12345 and again api-key-12345";
        assert_eq!(mask_text(text, &secrets), "DATABASE_URL=mysql://app:****@db:3306/app\nKEY=**** and again ****");
        // A URL password the node does not know as a datastore value.
        assert_eq!(mask_text("connecting to redis://u:hunter2@cache/0", &[]), "connecting to redis://u:****@cache/0");
        assert_eq!(mask_text("http://host:8080/path", &[]), "http://host:8080/path");
    }

    #[test]
    fn a_status_leaves_with_no_secret_in_its_free_text() {
        let mut status: AgentStatus = serde_json::from_value(serde_json::json!({
            "machine": "m1", "services": ["api"], "updated_at_ms": 1,
            "problems": ["api: DB_URL postgres://a:topsecret@db/x unreachable"],
            "listener": {"enabled": true, "state": "idle", "running_since_ms": null, "runs_total": 1,
                "next_allowed_at_ms": 0, "queued_triggers": 0, "problem": null,
                "last_run": {"reasons": ["datastore changed"], "triggers": 1, "started_at_ms": 0, "duration_ms": 1,
                    "exit_code": 1, "signal": null, "timed_out": false, "error": null,
                    "output_tail": "env: PASSWORD=topsecret TOKEN=on"}},
            "processes": {"api": {"port": 1, "health": "failing",
                "process": null,
                "check": {"healthy": false, "consecutive_failures": 1, "consecutive_passes": 0, "checks": 1,
                    "last_output": "exit code 1: login topsecret refused", "last_checked_ms": 1}}}
        }))
        .unwrap();
        mask_status(&mut status, ["topsecret", "on"]);
        let text = serde_json::to_string(&status).unwrap();
        assert!(!text.contains("topsecret"), "{text}");
        // Too short to be a secret: left alone.
        assert!(text.contains("TOKEN=on"), "{text}");
    }
}
