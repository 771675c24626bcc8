//! `packer:run`, `packer:clean`, `packer:delete` (`packer:create` is
//! `generate`): a node group's AMIs, built
//! by the real `packer` binary and managed through gantry-aws, recorded in
//! `.gantry/amis/<group>.json`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use gantry_aws::{Aws, Connect, GIT_COMMIT_TAG, GROUP_TAG, Image};
use gantry_generate::packer_path;
use gantry_generate::write::write_atomic;
use serde::{Deserialize, Serialize};

use crate::BadInput;
use crate::cli::AwsArgs;
use crate::context::Context;
use crate::repo::Opened;

/// Where `packer:run` records the AMIs it built, per group (newest last).
pub fn amis_record_path(group: &str) -> String {
    format!(".gantry/amis/{group}.json")
}

/// Where `packer:run` keeps packer's full output.
pub fn packer_log_path(group: &str) -> String {
    format!(".gantry/logs/packer-{group}.log")
}

/// One AMI in `.gantry/amis/<group>.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BuiltImage {
    pub id: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Seconds since the Unix epoch.
    pub built_at: u64,
}

/// `packer:run GROUP`: `packer build` on packer/<group>.json, then tag,
/// record and print the AMI id (the last line on stdout).
pub fn run(ctx: &Context, opened: &Opened, group: &str, aws: &AwsArgs) -> anyhow::Result<()> {
    let endpoint_url = aws.endpoint_url.as_deref();
    opened.repo.group(group).map_err(|d| opened.bad_input(vec![d]))?;
    let template = packer_path(group);
    if !opened.dir.join(&template).is_file() {
        return Err(BadInput(format!(
            "error: {} does not exist\n = help: write it with `gantry packer:create {group}`, then run packer:run again",
            opened.show_path(&template)
        ))
        .into());
    }
    let log_path = opened.dir.join(packer_log_path(group));
    eprintln!(
        "building {} with packer (full output: {})",
        opened.show_path(&template),
        opened.show_path(&packer_log_path(group))
    );
    let artifacts = packer_build(&opened.dir, &template, endpoint_url, &log_path)?;
    let (region, image_id) = artifacts
        .first()
        .cloned()
        .with_context(|| format!("packer finished but reported no AMI (see {})", log_path.display()))?;

    let git_commit = git_commit(&opened.dir);
    let mut tags = vec![(GROUP_TAG.to_string(), group.to_string())];
    if let Some(commit) = &git_commit {
        tags.push((GIT_COMMIT_TAG.to_string(), commit.clone()));
    }
    let connect =
        Connect { endpoint_url: endpoint_url.map(str::to_string), region: Some(region.clone()), ..Connect::default() };
    ctx.block_on(async { Aws::connect(&connect).await?.tag_image(&image_id, &tags).await })?;

    let mut record = read_record(opened, group)?;
    let built_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let built = BuiltImage { id: image_id.clone(), region: region.clone(), git_commit, built_at };
    record.push(built);
    write_record(opened, group, &record)?;
    eprintln!("tagged {image_id} in {region} and recorded it in {}", opened.show_path(&amis_record_path(group)));
    ctx.output().print(record.last().expect("just pushed"), |out| Ok(writeln!(out, "{image_id}")?))
}

/// `packer:clean GROUP -n KEEP`: deregister all but the newest KEEP AMIs.
pub fn clean(
    ctx: &Context,
    opened: &Opened,
    group: &str,
    keep: usize,
    dry_run: bool,
    aws: &AwsArgs,
) -> anyhow::Result<()> {
    let connect = super::aws::connect_for(opened, Some(group), aws.endpoint_url.as_deref());
    let mut out = ctx.output().lines();
    let (region, images, doomed) = ctx.block_on(async {
        let aws = Aws::connect(&connect).await?;
        let images = aws.group_images(group).await?;
        let doomed = gantry_aws::beyond_newest(&images, keep).to_vec();
        if doomed.is_empty() {
            writeln!(
                out,
                "nothing to clean: group {group} has {} AMI(s) in {}, keeping up to {keep}",
                images.len(),
                aws.region()
            )?;
        }
        deregister_all(&aws, (opened, group), &doomed, dry_run, &mut out).await?;
        anyhow::Ok((aws.region().to_string(), images, doomed))
    })?;
    if !doomed.is_empty() {
        writeln!(out, "kept the newest {} of {} AMI(s) of group {group}", images.len() - doomed.len(), images.len())?;
    }
    if ctx.output().is_json() {
        let kept = images[..images.len() - doomed.len()].iter().map(|i| i.id.as_str()).collect();
        let deregistered = doomed.iter().map(ImageView::of).collect();
        return crate::output::print_json(&Cleaned { deregistered, dry_run, group, kept, region: &region });
    }
    Ok(())
}

/// `packer:delete GROUP`: deregister every AMI of the group and remove its
/// template; nothing else (no autoscaling group) is touched.
pub fn delete(ctx: &Context, opened: &Opened, group: &str, dry_run: bool, aws: &AwsArgs) -> anyhow::Result<()> {
    let connect = super::aws::connect_for(opened, Some(group), aws.endpoint_url.as_deref());
    let mut out = ctx.output().lines();
    let (region, images) = ctx.block_on(async {
        let aws = Aws::connect(&connect).await?;
        let images = aws.group_images(group).await?;
        if images.is_empty() {
            writeln!(out, "group {group} has no AMI in {}", aws.region())?;
        }
        deregister_all(&aws, (opened, group), &images, dry_run, &mut out).await?;
        anyhow::Ok((aws.region().to_string(), images))
    })?;
    let template = opened.dir.join(packer_path(group));
    let had_template = template.is_file();
    if had_template {
        if dry_run {
            writeln!(out, "would remove {}", opened.show_path(&packer_path(group)))?;
        } else {
            std::fs::remove_file(&template).with_context(|| format!("removing {}", template.display()))?;
            writeln!(out, "removed {}", opened.show_path(&packer_path(group)))?;
        }
    }
    if ctx.output().is_json() {
        return crate::output::print_json(&Deleted {
            deregistered: images.iter().map(ImageView::of).collect(),
            dry_run,
            group,
            region: &region,
            template_removed: had_template.then(|| opened.show_path(&packer_path(group))),
        });
    }
    Ok(())
}

/// What `packer:clean --json` prints.
#[derive(Debug, Serialize)]
struct Cleaned<'a> {
    deregistered: Vec<ImageView<'a>>,
    dry_run: bool,
    group: &'a str,
    kept: Vec<&'a str>,
    region: &'a str,
}

/// What `packer:delete --json` prints.
#[derive(Debug, Serialize)]
struct Deleted<'a> {
    deregistered: Vec<ImageView<'a>>,
    dry_run: bool,
    group: &'a str,
    region: &'a str,
    template_removed: Option<String>,
}

/// One AMI deregistered (or that would be).
#[derive(Debug, Serialize)]
struct ImageView<'a> {
    creation_date: &'a str,
    id: &'a str,
    name: &'a str,
    snapshots: &'a [String],
}

impl<'a> ImageView<'a> {
    fn of(image: &'a Image) -> ImageView<'a> {
        ImageView {
            creation_date: &image.creation_date,
            id: &image.id,
            name: &image.name,
            snapshots: &image.snapshot_ids,
        }
    }
}

/// Deregisters `images` (or says it would), dropping each from the group's
/// record as soon as it is gone, so the record lists what exists even when
/// a later one fails.
async fn deregister_all(
    aws: &Aws,
    (opened, group): (&Opened, &str),
    images: &[Image],
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    for image in images {
        let what = format!("{} ({}, {})", image.id, image.name, image.creation_date);
        if dry_run {
            writeln!(out, "would deregister {what} and {} snapshot(s)", image.snapshot_ids.len())?;
        } else {
            aws.deregister(image).await?;
            forget(opened, group, &image.id)?;
            writeln!(out, "deregistered {what} and {} snapshot(s)", image.snapshot_ids.len())?;
        }
    }
    Ok(())
}

/// The AMIs `packer:run` recorded for the group (none when it never ran).
fn read_record(opened: &Opened, group: &str) -> anyhow::Result<Vec<BuiltImage>> {
    let path = opened.dir.join(amis_record_path(group));
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_record(opened: &Opened, group: &str, record: &[BuiltImage]) -> anyhow::Result<()> {
    let path = opened.dir.join(amis_record_path(group));
    write_atomic(&path, &gantry_generate::to_json_bytes(&record))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Drops a deregistered AMI from the record (if it is there).
fn forget(opened: &Opened, group: &str, image_id: &str) -> anyhow::Result<()> {
    let mut record = read_record(opened, group)?;
    let before = record.len();
    record.retain(|built| built.id != image_id);
    if record.len() == before {
        return Ok(());
    }
    write_record(opened, group, &record)
}

/// Runs `packer build -machine-readable`, showing its steps on stderr and
/// keeping every line in `log_path`; returns the (region, AMI id) pairs of
/// its artifact.
fn packer_build(
    dir: &Path,
    template: &str,
    endpoint_url: Option<&str>,
    log_path: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut log = std::fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = Command::new("packer");
    command.args(["build", "-machine-readable", "-color=false"]);
    if let Some(url) = endpoint_url {
        command.arg(format!("-var=aws_endpoint={url}"));
    }
    command.arg(template).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "packer is not installed: install it (Debian: `apt-get install packer`, or scripts/install-test-deps)"
            )
        } else {
            anyhow::Error::from(e).context("starting packer")
        }
    })?;
    // Packer's stderr is small (usage errors); read it after stdout ends.
    let stderr = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let mut artifacts = Vec::new();
    let mut errors = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading packer's output")?;
        writeln!(log, "{line}").with_context(|| format!("writing {}", log_path.display()))?;
        match MachineLine::parse(&line) {
            Some(MachineLine::Say(text)) => eprintln!("  {}", text.trim()),
            Some(MachineLine::Error(text)) => errors.push(text),
            Some(MachineLine::ArtifactId(ids)) => artifacts.extend(ids),
            None => {}
        }
    }
    let stderr_text = stderr_reader.join().unwrap_or_default();
    log.write_all(stderr_text.as_bytes()).with_context(|| format!("writing {}", log_path.display()))?;
    let status = child.wait().context("waiting for packer")?;
    if !status.success() {
        let mut tail: Vec<String> = errors.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        tail.extend(stderr_text.lines().map(str::to_string));
        let shown = tail.len().saturating_sub(15);
        return Err(anyhow::anyhow!(
            "packer build failed ({status}):\n{}\n(full output: {})",
            tail[shown..].join("\n"),
            log_path.display()
        ));
    }
    Ok(artifacts)
}

/// The lines of packer's `-machine-readable` output that matter here:
/// `TIMESTAMP,TARGET,TYPE,DATA...`, commas in data written as
/// `%!(PACKER_COMMA)` and newlines as `\n`.
#[derive(Debug, PartialEq)]
enum MachineLine {
    /// A step (`ui,say`): the progress shown.
    Say(String),
    /// `ui,error`.
    Error(String),
    /// `artifact,0,id,REGION:AMI[,REGION:AMI...]`.
    ArtifactId(Vec<(String, String)>),
}

impl MachineLine {
    fn parse(line: &str) -> Option<MachineLine> {
        let fields: Vec<&str> = line.splitn(6, ',').collect();
        let unescape = |s: &str| s.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n");
        match fields.get(2..)? {
            ["ui", "say", text, ..] => Some(MachineLine::Say(unescape(text))),
            ["ui", "error", text, ..] => Some(MachineLine::Error(unescape(text))),
            ["artifact", _, "id", ids] => Some(MachineLine::ArtifactId(
                unescape(ids)
                    .split(',')
                    .filter_map(|pair| pair.split_once(':'))
                    .map(|(region, id)| (region.to_string(), id.to_string()))
                    .collect(),
            )),
            _ => None,
        }
    }
}

/// The repository's commit, when it is a git work tree.
fn git_commit(dir: &Path) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).stderr(Stdio::null()).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

#[cfg(test)]
mod tests {
    use super::MachineLine;

    #[test]
    fn machine_readable_lines() {
        assert_eq!(
            MachineLine::parse("1,amazon-ebs,artifact,0,id,us-east-1:ami-1f4bd332262240e4b"),
            Some(MachineLine::ArtifactId(vec![("us-east-1".into(), "ami-1f4bd332262240e4b".into())]))
        );
        assert_eq!(
            MachineLine::parse("1,amazon-ebs,artifact,0,id,us-east-1:ami-a%!(PACKER_COMMA)eu-west-1:ami-b"),
            Some(MachineLine::ArtifactId(vec![
                ("us-east-1".into(), "ami-a".into()),
                ("eu-west-1".into(), "ami-b".into())
            ]))
        );
        assert_eq!(
            MachineLine::parse("1,,ui,say,==> amazon-ebs: No volumes to clean up%!(PACKER_COMMA) skipping"),
            Some(MachineLine::Say("==> amazon-ebs: No volumes to clean up, skipping".into()))
        );
        assert_eq!(MachineLine::parse("1,amazon-ebs,artifact,0,builder-id,mitchellh.amazonebs"), None);
    }
}
