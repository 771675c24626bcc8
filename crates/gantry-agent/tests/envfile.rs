//! Env files through a real shell: every value comes back byte for byte, the
//! files are 0640, and an unchanged environment rewrites nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use gantry_agent::envfile::{self, write_env_files};

/// What `sh` sees for `key` after sourcing `file`.
fn sourced(file: &std::path::Path, key: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(". \"$1\"; printf %s \"${key}\""))
        .arg("sh")
        .arg(file)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn values_round_trip_through_sh() {
    let dir = tempfile::tempdir().unwrap();
    let values = [
        "plain",
        "",
        "it's",
        "''",
        "a b  c",
        "$HOME and ${PATH} and $(touch pwned) and `touch pwned`",
        "line one\nline two\n",
        "\\back\\slash\\",
        "\"double\" 'single' \t tab",
        "trailing newline\n\n",
        "ünïcödé ✓",
        "semi; colon && pipe | star * glob ?",
    ];
    let env: BTreeMap<String, String> =
        values.iter().enumerate().map(|(i, v)| (format!("V{i}"), v.to_string())).collect();
    assert!(write_env_files(dir.path(), "app-www", &env).unwrap());
    let conf = envfile::conf_path(dir.path(), "app-www");
    for (key, value) in &env {
        assert_eq!(&sourced(&conf, key), value, "{key}");
    }
    assert!(!dir.path().join("pwned").exists(), "a value was executed");

    let json: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(envfile::json_path(dir.path(), "app-www")).unwrap()).unwrap();
    assert_eq!(json, env);
}

#[test]
fn files_are_0640_and_unchanged_content_is_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let env_dir = dir.path().join("services.d");
    let env = BTreeMap::from([("DATABASE_URL".to_string(), "mysql://u:p@h/db".to_string())]);
    assert!(write_env_files(&env_dir, "api", &env).unwrap(), "first write");
    for path in [envfile::conf_path(&env_dir, "api"), envfile::json_path(&env_dir, "api")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "{}", path.display());
    }
    assert!(!write_env_files(&env_dir, "api", &env).unwrap(), "same content");

    let mut changed = env.clone();
    changed.insert("ENV".to_string(), "production".to_string());
    assert!(write_env_files(&env_dir, "api", &changed).unwrap(), "new key");
    assert_eq!(sourced(&envfile::conf_path(&env_dir, "api"), "ENV"), "production");
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the env directory should be.
    let blocker = dir.path().join("services.d");
    std::fs::write(&blocker, "").unwrap();
    let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
    let err = write_env_files(&blocker, "api", &env).unwrap_err();
    assert!(err.to_string().contains(&blocker.join("api.conf").display().to_string()), "{err}");

    let bad = BTreeMap::from([("NOT-A-NAME".to_string(), "1".to_string())]);
    let err = write_env_files(dir.path(), "api", &bad).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("api.conf") && err.to_string().contains("NOT-A-NAME"), "{err}");
    assert!(!dir.path().join("api.conf").exists());
}
