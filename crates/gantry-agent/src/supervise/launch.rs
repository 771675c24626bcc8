//! Turning a [`SupervisorConfig`] into a running process: the program, the
//! exact environment, the user, the working directory, its own process
//! group; and the messages that say why a process could not start.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::Path;

use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use super::user::{self, PASSWD};
use super::{Program, SupervisorConfig};
use crate::process_group::spawn_in_group;

/// PATH for a process when neither its environment nor the agent's has one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Spawns the configured program in a new process group, its output in
/// the returned pipe. The error is the `problem` to report: what failed
/// and how to fix it.
pub(super) fn launch(config: &SupervisorConfig) -> Result<(Child, pipe::Receiver), String> {
    let mut command = program(&config.program)?;
    command.env_clear().envs(&config.env);
    if !config.env.contains_key("PATH") {
        command.env("PATH", std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()));
    }
    if let Some(user) = &config.user {
        as_user(&mut command, user, &config.env)?;
    }
    if let Some(cwd) = &config.cwd {
        // Checked here: a missing directory fails the spawn with the same
        // "not found" as a missing program.
        if !cwd.is_dir() {
            return Err(format!("the working directory {} does not exist", cwd.display()));
        }
        command.current_dir(cwd);
    }
    // The last resort if the task is dropped without stopping the process
    // (the runtime going away): it kills the main process, not the group.
    command.kill_on_drop(true);
    spawn_in_group(command).map_err(|e| spawn_problem(&config.program, &path_of(config), &e))
}

/// `/bin/sh -c LINE` (not `sh` from PATH: the service's PATH may not have
/// it), or the argv as given.
fn program(program: &Program) -> Result<Command, String> {
    match program {
        Program::Shell(line) => {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(line);
            Ok(command)
        }
        Program::Argv(argv) => {
            let (name, args) = argv.split_first().ok_or("the program is an empty argv; give at least its name")?;
            let mut command = Command::new(name);
            command.args(args);
            Ok(command)
        }
    }
}

/// Runs `command` as `user`, with HOME, USER and LOGNAME from its passwd
/// entry unless `env` sets them. The agent's own user needs no switch.
/// Every command the agent runs for a service (its process, a command
/// check, its `on_delete` hook) goes through this when the service names a
/// user, so none of them runs with the agent's rights.
pub(crate) fn as_user(command: &mut Command, user: &str, env: &BTreeMap<String, String>) -> Result<(), String> {
    let account = user::resolve_in(user, Path::new(PASSWD))?;
    let me = rustix::process::geteuid().as_raw();
    if account.uid != me {
        if me != 0 {
            return Err(format!("running as {user} needs root; the agent runs as uid {me}"));
        }
        // std drops the supplementary groups (setgroups) before setuid,
        // so nothing of root's groups is left.
        command.uid(account.uid).gid(account.gid);
    }
    for (key, value) in [("HOME", &account.home), ("USER", &account.name), ("LOGNAME", &account.name)] {
        if !env.contains_key(key) {
            command.env(key, value);
        }
    }
    Ok(())
}

/// The PATH the process gets, for messages.
fn path_of(config: &SupervisorConfig) -> OsString {
    match config.env.get("PATH") {
        Some(path) => path.into(),
        None => std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    }
}

/// Why spawning `program` failed, in words that say what to fix.
fn spawn_problem(program: &Program, path: &OsString, e: &io::Error) -> String {
    let name = match program {
        Program::Shell(_) => "/bin/sh",
        Program::Argv(argv) => argv.first().map_or("", String::as_str),
    };
    match e.kind() {
        io::ErrorKind::NotFound if name.contains('/') => format!("cannot start {name}: no such file"),
        io::ErrorKind::NotFound => format!("cannot start {name}: not found in PATH={}", path.to_string_lossy()),
        io::ErrorKind::PermissionDenied => {
            format!("cannot start {name}: permission denied (is it executable, and readable by the user?)")
        }
        _ => format!("cannot start {name}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Program {
        Program::Argv(words.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn problems_say_what_to_fix() {
        let not_found = io::Error::from(io::ErrorKind::NotFound);
        let path = OsString::from("/usr/bin:/bin");
        assert_eq!(
            spawn_problem(&argv(&["redis-server", "--port", "1"]), &path, &not_found),
            "cannot start redis-server: not found in PATH=/usr/bin:/bin"
        );
        assert_eq!(
            spawn_problem(&argv(&["/opt/app/run"]), &path, &not_found),
            "cannot start /opt/app/run: no such file"
        );
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            spawn_problem(&argv(&["./run"]), &path, &denied),
            "cannot start ./run: permission denied (is it executable, and readable by the user?)"
        );
        assert_eq!(
            program(&Program::Argv(Vec::new())).err().as_deref(),
            Some("the program is an empty argv; give at least its name")
        );
    }
}
