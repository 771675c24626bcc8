//! The env files a service reads its configuration from (seed 001):
//! `<env_dir>/<service>.conf`, shell `export` lines to source before the
//! command, and `<env_dir>/<service>.json`, the same map for programs.
//!
//! Both are written atomically with mode 0640: they hold secrets (database
//! URLs with passwords) that the service's group must read and nobody else.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use gantry_generate::write::{WriteOutcome, write_atomic_with_mode};
use gantry_spec::template::is_env_name;

/// Unix permissions of env files: owner writes, the service's group reads.
pub const ENV_FILE_MODE: u32 = 0o640;

/// The first line of every `.conf` file.
pub const HEADER: &str = "# Written by gantry; it is rewritten whenever the service's environment changes.";

/// The shell form: the header, then one `export KEY='value'` line per entry
/// in key order. Values are single-quoted, a `'` written `'\''`, so nothing in
/// them (spaces, `$`, backquotes, newlines) is interpreted by the shell.
///
/// Keys are written as given; [`write_env_files`] checks they are
/// environment-variable names first.
pub fn render_env(env: &BTreeMap<String, String>) -> String {
    let mut out = format!("{HEADER}\n");
    for (key, value) in env {
        out.push_str(&format!("export {key}='{}'\n", value.replace('\'', r"'\''")));
    }
    out
}

/// The JSON form: one object, keys sorted, pretty-printed with a trailing newline.
pub fn render_env_json(env: &BTreeMap<String, String>) -> String {
    let mut json = serde_json::to_string_pretty(env).expect("a map of strings serializes");
    json.push('\n');
    json
}

/// Where [`write_env_files`] writes `service`'s `.conf` file.
pub fn conf_path(env_dir: &Path, service: &str) -> PathBuf {
    env_dir.join(format!("{service}.conf"))
}

/// Where [`write_env_files`] writes `service`'s `.json` file.
pub fn json_path(env_dir: &Path, service: &str) -> PathBuf {
    env_dir.join(format!("{service}.json"))
}

/// Writes `<env_dir>/<service>.conf` and `<env_dir>/<service>.json`
/// atomically with mode 0640, creating `env_dir` if needed. Returns whether
/// either file changed (a file with the same bytes and mode is not touched),
/// so the caller knows whether the service must be restarted.
///
/// Errors name the file. A key that is not an environment-variable name, a
/// value with a NUL byte (no environment can hold one), or a service name
/// that is not a plain file name is `InvalidInput`, and nothing is written.
pub fn write_env_files(env_dir: &Path, service: &str, env: &BTreeMap<String, String>) -> io::Result<bool> {
    let conf = conf_path(env_dir, service);
    check(service, env)
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {message}", conf.display())))?;
    let mut changed = false;
    for (path, text) in [(conf, render_env(env)), (json_path(env_dir, service), render_env_json(env))] {
        let outcome = write_atomic_with_mode(&path, text.as_bytes(), Some(ENV_FILE_MODE))
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
        changed |= outcome == WriteOutcome::Written;
    }
    Ok(changed)
}

fn check(service: &str, env: &BTreeMap<String, String>) -> Result<(), String> {
    if service.is_empty() || service.starts_with('.') || service.contains(['/', '\0']) {
        return Err(format!("\"{service}\" is not a service id that can name a file"));
    }
    if let Some(key) = env.keys().find(|k| !is_env_name(k)) {
        return Err(format!(
            "\"{key}\" is not an environment variable name (letters, digits and `_`, not starting with a digit)"
        ));
    }
    if let Some(key) = env.iter().find(|(_, v)| v.contains('\0')).map(|(k, _)| k) {
        return Err(format!("the value of {key} contains a NUL byte, which no environment can hold"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn renders_sorted_single_quoted_exports() {
        let text = render_env(&env(&[("PORT", "8080"), ("API_URL", "http://10.0.0.7:1100"), ("Q", "it's $HOME")]));
        expect_test::expect![[r#"
            # Written by gantry; it is rewritten whenever the service's environment changes.
            export API_URL='http://10.0.0.7:1100'
            export PORT='8080'
            export Q='it'\''s $HOME'
        "#]]
        .assert_eq(&text);
        assert_eq!(render_env(&BTreeMap::new()), format!("{HEADER}\n"));
    }

    #[test]
    fn renders_json() {
        expect_test::expect![[r#"
            {
              "A": "1",
              "B": "two \"quoted\""
            }
        "#]]
        .assert_eq(&render_env_json(&env(&[("B", "two \"quoted\""), ("A", "1")])));
    }

    #[test]
    fn rejects_what_a_shell_or_a_file_system_cannot_take() {
        assert!(check("app-www", &env(&[("A_1", "x")])).is_ok());
        assert!(check("../etc", &env(&[])).unwrap_err().contains("service id"));
        assert!(check("a/b", &env(&[])).is_err());
        assert!(check("", &env(&[])).is_err());
        assert!(check("x", &env(&[("1A", "x")])).unwrap_err().contains("\"1A\" is not an environment variable name"));
        assert!(check("x", &env(&[("A;rm", "x")])).is_err());
        assert!(check("x", &env(&[("A", "x\0y")])).unwrap_err().contains("NUL"));
    }
}
