//! Deploys (issue 17): `deploy` (pack, upload once, release, follow the
//! rollout), `deploy:history`, `deploy:show`, `deploy:status`,
//! `deploy:promote`, `deploy:abort`, `deploy:rollback` and `releases:on`.

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gantry_api::{
    GitInfo, NodePhase, Release, ReleaseRequest, ReleaseStatus, RollbackRequest, Rollout, RolloutPhase, now_ms,
};
use gantry_client::Client;
use sha2::Digest as _;

use crate::BadInput;
use crate::context::{Context, explain};
use crate::output::print_table;
use crate::repo::Opened;

/// What `gantry deploy` was asked.
#[derive(Debug)]
pub struct DeployArgs<'a> {
    pub service: &'a str,
    pub artifact: Option<&'a Path>,
    pub message: Option<String>,
    pub detach: bool,
    pub timeout: Duration,
}

fn os_user() -> Option<String> {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).ok().filter(|u| !u.is_empty())
}

/// The artifact's bytes: a directory packed as a tar archive (sorted,
/// owner and times fixed, so the same files give the same SHA-256 and are
/// not uploaded twice), or an archive file as it is. A directory inside
/// `repo` keeps its path from the repository's root (`bin` unpacks as
/// `bin/...`), so a service's command runs the same from the repository
/// and from a release; one outside it is packed at the release's root.
pub fn pack(path: &Path, repo: &Path) -> anyhow::Result<Vec<u8>> {
    if path.is_dir() {
        let (root, inside) = match (std::fs::canonicalize(path), std::fs::canonicalize(repo)) {
            (Ok(full), Ok(repo)) => match full.strip_prefix(&repo) {
                Ok(rel) if !rel.as_os_str().is_empty() => (repo.clone(), rel.to_path_buf()),
                _ => (full.clone(), PathBuf::from(".")),
            },
            _ => (path.to_path_buf(), PathBuf::from(".")),
        };
        let out = std::process::Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--format=gnu", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg("-")
            .arg(&inside)
            .output()
            .context("running tar (install it: apt-get install tar)")?;
        if !out.status.success() {
            anyhow::bail!(
                "packing {}: tar {}: {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        return Ok(out.stdout);
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar.zst"].iter().any(|ext| name.ends_with(ext))
        && path.is_file()
    {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    Err(BadInput(format!(
        "error: the artifact {} is neither a directory nor a tar archive\n = help: point \"artifact\": {{\"path\": ...}} (or --artifact) at a directory or a .tar/.tar.gz file",
        path.display()
    ))
    .into())
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// The repository's git state; `previous`: the commit the last release was made from.
fn git_info(dir: &Path, previous: Option<&str>) -> Option<GitInfo> {
    let commit = git(dir, &["rev-parse", "HEAD"])?;
    let lines = |text: Option<String>| -> Vec<String> {
        text.unwrap_or_default().lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    };
    let subjects = match previous.filter(|p| *p != commit) {
        Some(prev) if git(dir, &["cat-file", "-e", &format!("{prev}^{{commit}}")]).is_some() => {
            lines(git(dir, &["log", "--format=%s", "-n", "100", &format!("{prev}..HEAD")]))
        }
        Some(_) | None if previous == Some(commit.as_str()) => Vec::new(),
        _ => lines(git(dir, &["log", "--format=%s", "-n", "1"])),
    };
    Some(GitInfo {
        branch: git(dir, &["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD"),
        dirty: git(dir, &["status", "--porcelain"]).is_some_and(|s| !s.is_empty()),
        subjects,
        tags: lines(git(dir, &["tag", "--points-at", "HEAD"])),
        commit,
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `gantry deploy SERVICE`: pack, upload (once), release, follow.
pub fn deploy(ctx: &Context, opened: &Opened, args: DeployArgs<'_>) -> anyhow::Result<()> {
    let (detach, timeout) = (args.detach, args.timeout);
    let (release, line) = publish(ctx, ctx.client(), opened, args)?;
    writeln!(ctx.output().lines(), "{line}")?;
    finish(ctx, ctx.client(), release, detach, timeout)
}

/// `gantry up`: release v1 of each service with an artifact and no
/// release yet, and follow each rollout; a line for each. How many it made.
pub fn first_releases(ctx: &Context, client: &Client, opened: &Opened, say: impl Fn(&str)) -> anyhow::Result<usize> {
    // Every release is made first, so their rollouts (one per service,
    // independent) run at once; then each is followed to its end.
    let mut made = Vec::new();
    for (id, service) in &opened.repo.services {
        if service.deploy.artifact.is_none() {
            continue;
        }
        let history = ctx.block_on(client.release_history(id)).map_err(explain)?;
        if !history.items.is_empty() {
            continue;
        }
        let args = DeployArgs {
            service: id,
            artifact: None,
            message: Some("gantry up".into()),
            detach: false,
            timeout: Duration::from_secs(300),
        };
        let (release, _) = publish(ctx, client, opened, args)?;
        made.push((id, release.version));
    }
    for (id, version) in &made {
        let release = follow(ctx, client, id, *version, Duration::from_secs(300))?;
        say(&format!("release     {id} v{} {}", release.version, release.status.word()));
    }
    Ok(made.len())
}

/// Packs, uploads (unless stored) and releases; the release and a line saying so.
fn publish(ctx: &Context, client: &Client, opened: &Opened, args: DeployArgs<'_>) -> anyhow::Result<(Release, String)> {
    let service = args.service;
    let definition_path = opened.dir.join(gantry_spec::SERVICES_DIR).join(format!("{service}.json"));
    let definition: Option<gantry_api::ServiceDefinition> = match std::fs::read_to_string(&definition_path) {
        Ok(text) => {
            Some(serde_json::from_str(&text).with_context(|| format!("reading {}", definition_path.display()))?)
        }
        Err(_) => None,
    };
    let spec = opened.repo.services.get(service);
    let artifact: PathBuf = match (args.artifact, spec.and_then(|s| s.deploy.artifact.as_deref())) {
        (Some(path), _) => path.to_owned(),
        (None, Some(path)) => opened.dir.join(path),
        (None, None) => {
            return Err(BadInput(format!(
                "error: service {service:?} names no artifact\n = help: add \"artifact\": {{\"path\": \"dist/{service}\"}} to {}, or pass --artifact PATH",
                opened.show_path(&format!("{}/{service}.json", gantry_spec::SERVICES_DIR))
            ))
            .into());
        }
    };
    if !artifact.exists() {
        return Err(BadInput(format!(
            "error: the artifact {} does not exist\n = help: build it first, or point --artifact at it",
            artifact.display()
        ))
        .into());
    }
    let bytes = pack(&artifact, &opened.dir)?;
    let sha256 = sha256_hex(&bytes);
    let len = bytes.len() as u64;
    let (stored, history) = ctx
        .block_on(async {
            let stat = client.artifact_stat(service, &sha256).await?;
            if !stat.stored {
                client.upload_artifact(service, &sha256, bytes).await?;
            }
            Ok::<_, gantry_client::ClientError>((stat.stored, client.release_history(service).await.ok()))
        })
        .map_err(explain)?;
    let previous = history.as_ref().and_then(|h| h.items.iter().find_map(|r| r.git.as_ref().map(|g| g.commit.clone())));
    let request = ReleaseRequest {
        sha256: sha256.clone(),
        git: git_info(&opened.dir, previous.as_deref()),
        message: args.message,
        os_user: os_user(),
        definition,
    };
    let release = ctx.block_on(client.create_release(service, &request)).map_err(explain)?;
    let line = format!(
        "{service} v{}: artifact {} ({}, {}), by {}",
        release.version,
        &sha256[..12],
        size(len),
        if stored { "already stored" } else { "uploaded" },
        release.who
    );
    Ok((release, line))
}

/// Follows a new release's rollout (unless `detach`) and prints its outcome.
fn finish(ctx: &Context, client: &Client, release: Release, detach: bool, timeout: Duration) -> anyhow::Result<()> {
    let release = if detach { release } else { follow(ctx, client, &release.service, release.version, timeout)? };
    let ok = !matches!(release.status, ReleaseStatus::Failed | ReleaseStatus::Reverted | ReleaseStatus::Aborted);
    ctx.output().print(&release, |out| {
        let why = release.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        writeln!(out, "{} v{} {}{why}", release.service, release.version, release.status.word())?;
        if release.status == ReleaseStatus::AwaitingPromotion {
            writeln!(
                out,
                "  its canaries are healthy: `gantry deploy:promote {0}` or `gantry deploy:abort {0}`",
                release.service
            )?;
        }
        Ok(())
    })?;
    if !ok {
        anyhow::bail!("the release of {} v{} {}", release.service, release.version, release.status.word());
    }
    Ok(())
}

/// Polls the rollout of `version` until it is over or waits for promotion,
/// drawing its progress (a bar on a terminal, a line per change elsewhere).
fn follow(ctx: &Context, client: &Client, service: &str, version: u64, timeout: Duration) -> anyhow::Result<Release> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal() && !ctx.output().is_json();
    let mut last = String::new();
    loop {
        let status = ctx.block_on(client.rollout_status(service)).map_err(explain)?;
        let rollout = status.rollout.filter(|r| r.version == version);
        let release = match &status.release {
            Some(r) if r.version == version => Some(r.clone()),
            _ => ctx.block_on(client.release(service, version)).ok().map(|d| d.release),
        };
        if let Some(rollout) = &rollout {
            let line = progress(rollout, tty);
            if line != last {
                if tty {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
                last = line;
            }
        }
        match (&rollout, release) {
            (None, Some(release)) if release.status.finished() => {
                if tty {
                    eprintln!();
                }
                return Ok(release);
            }
            (Some(r), Some(release)) if r.phase == RolloutPhase::Canary => {
                if tty {
                    eprintln!();
                }
                return Ok(release);
            }
            _ => {}
        }
        if started.elapsed() > timeout {
            anyhow::bail!(
                "the rollout of {service} v{version} is still going after {}: `gantry deploy:status {service}` follows it",
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line of a rollout's progress: a bar and counts, then each node.
fn progress(rollout: &Rollout, bar: bool) -> String {
    let total = rollout.nodes.len().max(1);
    let done = rollout.nodes.iter().filter(|n| matches!(n.phase, NodePhase::Healthy | NodePhase::Reverted)).count();
    let mut line = format!("{} v{} {}", rollout.service, rollout.version, phase_word(rollout));
    if bar {
        let width = 20;
        let filled = done * width / total;
        line.push_str(&format!(" [{}{}]", "#".repeat(filled), "-".repeat(width - filled)));
    }
    line.push_str(&format!(" {done}/{total}:"));
    for node in &rollout.nodes {
        line.push_str(&format!(" {}={}", node.machine, node.phase.word()));
    }
    line
}

fn phase_word(rollout: &Rollout) -> &'static str {
    match rollout.phase {
        RolloutPhase::Rolling => "rolling",
        RolloutPhase::Canary => "canary (awaiting promotion)",
        RolloutPhase::Reverting => "reverting",
    }
}

fn ago(ms: u64) -> String {
    let secs = now_ms().saturating_sub(ms) / 1000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn took(release: &Release) -> String {
    release.finished_ms.map_or("-".into(), |f| format!("{:.1}s", f.saturating_sub(release.created_ms) as f64 / 1000.0))
}

/// `deploy:history SERVICE`.
pub fn history(ctx: &Context, service: &str) -> anyhow::Result<()> {
    let history = ctx.block_on(ctx.client().release_history(service)).map_err(explain)?;
    if ctx.output().is_json() {
        return crate::output::print_json(&history);
    }
    if history.items.is_empty() {
        println!("{service} has no release yet: `gantry deploy {service}` makes the first");
        return Ok(());
    }
    let mut rows =
        vec![["VERSION", "STATUS", "WHO", "WHEN", "COMMIT", "TOOK", "NODES", "MESSAGE"].map(String::from).to_vec()];
    for r in &history.items {
        let stable = if history.stable == Some(r.version) { " (stable)" } else { "" };
        let commit = r.git.as_ref().map_or("-".into(), |g| {
            format!("{}{}", &g.commit[..g.commit.len().min(10)], if g.dirty { "+" } else { "" })
        });
        let message = r.message.clone().or_else(|| r.reason.clone()).unwrap_or_default();
        rows.push(vec![
            format!("v{}{stable}", r.version),
            r.status.word().into(),
            r.who.clone(),
            ago(r.created_ms),
            commit,
            took(r),
            r.nodes.len().to_string(),
            message,
        ]);
    }
    print_table(&rows)
}

fn parse_version(text: &str) -> anyhow::Result<u64> {
    text.strip_prefix('v').unwrap_or(text).parse().map_err(|_| {
        BadInput(format!(
            "error: {text:?} is not a version\n = help: write v3 (or 3); `gantry deploy:history` lists them"
        ))
        .into()
    })
}

/// `deploy:show SERVICE vN`.
pub fn show(ctx: &Context, service: &str, version: &str) -> anyhow::Result<()> {
    let version = parse_version(version)?;
    let detail = ctx.block_on(ctx.client().release(service, version)).map_err(explain)?;
    ctx.output().print(&detail, |out| {
        let r = &detail.release;
        writeln!(out, "{} v{}: {}", r.service, r.version, r.status.word())?;
        if let Some(reason) = &r.reason {
            writeln!(out, "  why:      {reason}")?;
        }
        writeln!(out, "  who:      {}", r.who)?;
        writeln!(out, "  when:     {} (took {})", ago(r.created_ms), took(r))?;
        if let Some(message) = &r.message {
            writeln!(out, "  message:  {message}")?;
        }
        writeln!(out, "  artifact: sha256 {} ({})", r.sha256, size(r.size))?;
        if let Some(of) = r.rollback_of {
            writeln!(out, "  redeploys v{of}'s artifact")?;
        }
        if let Some(g) = &r.git {
            let branch = g.branch.as_deref().map(|b| format!(" on {b}")).unwrap_or_default();
            writeln!(out, "  git:      {}{branch}{}", g.commit, if g.dirty { " (dirty)" } else { "" })?;
            if !g.tags.is_empty() {
                writeln!(out, "  tags:     {}", g.tags.join(", "))?;
            }
            for subject in &g.subjects {
                writeln!(out, "    - {subject}")?;
            }
        }
        writeln!(out, "  nodes:")?;
        for n in &r.nodes {
            let why = n.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
            writeln!(out, "    {} {}{why}", n.machine, n.phase.word())?;
        }
        match detail.previous {
            Some(p) => writeln!(out, "  definition against v{p}:")?,
            None => writeln!(out, "  definition:")?,
        }
        for line in &detail.definition_diff {
            if detail.previous.is_none() || !line.starts_with(' ') {
                writeln!(out, "    {line}")?;
            }
        }
        Ok(())
    })
}

/// `deploy:status SERVICE`: the rollout now, or followed (`--follow`).
pub fn status(ctx: &Context, service: &str, follow_it: bool, timeout: Duration) -> anyhow::Result<()> {
    let client = ctx.client();
    let status = ctx.block_on(client.rollout_status(service)).map_err(explain)?;
    if follow_it && let Some(rollout) = &status.rollout {
        let release = follow(ctx, client, service, rollout.version, timeout)?;
        return finish(ctx, client, release, true, timeout);
    }
    let tty = std::io::stdout().is_terminal();
    ctx.output().print(&status, |out| {
        match (&status.rollout, &status.release) {
            (Some(rollout), _) => {
                writeln!(out, "{}", progress(rollout, tty))?;
                writeln!(out, "  by {}, started {}", rollout.who, ago(rollout.started_ms))?;
                for n in &rollout.nodes {
                    let why = n.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
                    writeln!(out, "  {} {}{why}", n.machine, n.phase.word())?;
                }
            }
            (None, Some(r)) => writeln!(
                out,
                "no rollout of {service} is running; v{} {} {}",
                r.version,
                r.status.word(),
                ago(r.created_ms)
            )?,
            (None, None) => writeln!(out, "{service} has no release yet")?,
        }
        Ok(())
    })
}

/// `deploy:promote SERVICE` / `deploy:abort SERVICE`.
pub fn promote_or_abort(ctx: &Context, service: &str, promote: bool) -> anyhow::Result<()> {
    let client = ctx.client();
    let rollout = ctx
        .block_on(async { if promote { client.promote(service).await } else { client.abort_rollout(service).await } })
        .map_err(explain)?;
    ctx.output().print(&rollout, |out| {
        let what = if promote {
            "promoted: every node follows"
        } else {
            "aborting: switched nodes go back to the stable release"
        };
        writeln!(out, "{service} v{} {what}", rollout.version)?;
        Ok(())
    })
}

/// `deploy:rollback SERVICE [--to vN]`: a new release of vN's artifact.
pub fn rollback(ctx: &Context, service: &str, to: Option<&str>, detach: bool, timeout: Duration) -> anyhow::Result<()> {
    let to = to.map(parse_version).transpose()?;
    let client = ctx.client();
    let release =
        ctx.block_on(client.rollback(service, &RollbackRequest { to, os_user: os_user() })).map_err(explain)?;
    writeln!(
        ctx.output().lines(),
        "{service} v{}: redeploying v{}'s artifact",
        release.version,
        release.rollback_of.unwrap_or(0)
    )?;
    finish(ctx, client, release, detach, timeout)
}

/// `releases:on MACHINE`.
pub fn on(ctx: &Context, machine: &str) -> anyhow::Result<()> {
    let releases = ctx.block_on(ctx.client().machine_releases(machine)).map_err(explain)?;
    if ctx.output().is_json() {
        return crate::output::print_json(&releases);
    }
    if releases.services.is_empty() {
        println!("{machine} runs no release");
        return Ok(());
    }
    let mut rows = vec![["SERVICE", "TOLD", "RUNS", "PHASE", "NOTE"].map(String::from).to_vec()];
    for (service, r) in &releases.services {
        rows.push(vec![
            service.clone(),
            r.target.map_or("-".into(), |v| format!("v{v}")),
            r.reported.as_ref().map_or("-".into(), |u| format!("v{}", u.version)),
            r.reported.as_ref().map_or("-".into(), |u| u.phase.word().into()),
            r.reported.as_ref().and_then(|u| u.message.clone()).unwrap_or_default(),
        ]);
    }
    print_table(&rows)
}
