//! `packer:run`, `packer:clean`, `packer:delete` against a real moto server
//! (one per test, on its own port) and the real `packer` binary.
//!
//! Moto keeps its default AMIs (they are the only images whose root device
//! is EBS, which packer's amazon-ebs builder insists on): the example's
//! source AMI becomes moto's Ubuntu image, and Gantry finds a group's AMIs
//! by owner (`self`) and `group` tag, never by listing everything.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, Tag};

use super::{Run, Scratch, block_on};

/// A moto AMI with an EBS root device, which packer accepts as a source.
const MOTO_SOURCE_AMI: &str = "ami-1e749f67";
const GROUP: &str = "12_04-bee";

/// A `moto_server` child process on a free loopback port; killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}): install it with scripts/install-test-deps (pip install 'moto[server]>=5,<6')")
            });
        let mut moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited before listening ({status})");
            }
            assert!(Instant::now() < deadline, "moto_server did not listen on port {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// Runs gantry in `dir` with dummy credentials and this endpoint in its environment.
    fn gantry(&self, dir: &Path, args: &[&str]) -> Run {
        let out = aws_command(dir, args).env("AWS_ENDPOINT_URL", &self.url).output().expect("running gantry");
        Run::from(out)
    }

    /// An EC2 client of this moto, for the tests' own checks and setup.
    fn ec2(&self) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "tests"))
            .endpoint_url(&self.url)
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// (id, tags) of the AMIs this account owns, sorted by id.
    fn own_images(&self) -> Vec<(String, Vec<(String, String)>)> {
        let out = block_on(self.ec2().describe_images().owners("self").send()).unwrap();
        let mut images: Vec<_> = out
            .images()
            .iter()
            .map(|i| {
                let mut tags: Vec<_> = i
                    .tags()
                    .iter()
                    .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
                    .collect();
                tags.sort();
                (i.image_id().unwrap().to_string(), tags)
            })
            .collect();
        images.sort();
        images
    }

    fn group_image_ids(&self, group: &str) -> Vec<String> {
        self.own_images()
            .into_iter()
            .filter(|(_, tags)| tags.iter().any(|(k, v)| k == "group" && v == group))
            .map(|(id, _)| id)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// gantry with dummy credentials and a region, and nothing from the
/// developer's own AWS setup (profile files, instance metadata).
fn aws_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
    command
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-aws-credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL");
    command
}

/// The example, its groups built from moto's source AMI with
/// `"communicator": "none"` (nothing to log in to), templates written.
fn example_for_moto(moto: &Moto) -> Scratch {
    let s = Scratch::example();
    s.edit("nodes.json", "\"source_ami\": \"ami-1ebb2077\"", &format!("\"source_ami\": \"{MOTO_SOURCE_AMI}\", \"communicator\": \"none\""));
    moto.gantry(s.dir.path(), &["packer:create"]).ok();
    s
}

/// `packer:run GROUP`: the AMI id, the last line of stdout.
fn packer_run(moto: &Moto, s: &Scratch) -> String {
    let out = moto.gantry(s.dir.path(), &["packer:run", GROUP]).ok();
    let id = out.lines().last().unwrap_or_default().to_string();
    assert!(id.starts_with("ami-"), "packer:run printed no AMI id last: {out:?}");
    id
}

#[test]
fn packer_run_builds_tags_records_and_prints_the_ami() {
    let moto = Moto::start();
    let s = Scratch::example();
    // No template yet: bad input, with the command that writes it.
    let err = moto.gantry(s.dir.path(), &["packer:run", GROUP]).bad_input();
    assert!(err.contains("packer/12_04-bee.json does not exist") && err.contains("gantry packer:create 12_04-bee"), "{err}");

    let s = example_for_moto(&moto);
    let git = |args: &[&str]| {
        let status = Command::new("git").arg("-C").arg(s.dir.path()).args(args).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "x"]);
    let head = String::from_utf8(Command::new("git").arg("-C").arg(s.dir.path()).args(["rev-parse", "HEAD"]).output().unwrap().stdout).unwrap();

    let run = moto.gantry(s.dir.path(), &["packer:run", GROUP]);
    assert!(run.stderr.contains("Creating AMI"), "packer's steps are shown: {}", run.stderr);
    let id = run.ok();
    let id = id.trim();
    assert_eq!(moto.own_images(), vec![(
        id.to_string(),
        vec![("git_commit".to_string(), head.trim().to_string()), ("group".to_string(), GROUP.to_string())]
    )]);
    let record: serde_json::Value = serde_json::from_str(&s.read(".gantry/amis/12_04-bee.json")).unwrap();
    assert_eq!(record[0]["id"], id);
    assert_eq!(record[0]["region"], "us-east-1");
    assert!(s.read(".gantry/logs/packer-12_04-bee.log").contains("artifact,0,id,us-east-1:"));
}

#[test]
fn packer_clean_keeps_the_newest_amis() {
    let moto = Moto::start();
    let s = example_for_moto(&moto);
    // Packer names AMIs `<group> <unix seconds>` and refuses a name in use;
    // against moto a build takes well under a second, so start each build
    // in a second of its own.
    let built: Vec<String> = (0..3)
        .map(|_| {
            let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            std::thread::sleep(Duration::from_nanos(u64::from(1_000_000_000 - since_epoch.subsec_nanos())) + Duration::from_millis(20));
            packer_run(&moto, &s)
        })
        .collect();
    assert_eq!(moto.group_image_ids(GROUP).len(), 3);
    let doomed = block_on(moto.ec2().describe_images().image_ids(&built[0]).send()).unwrap();
    let doomed_snapshots: Vec<String> = doomed.images()[0]
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
        .collect();
    assert!(!doomed_snapshots.is_empty());

    let out = moto.gantry(s.dir.path(), &["packer:clean", GROUP, "-n", "2", "--dry-run"]).ok();
    assert!(out.starts_with(&format!("would deregister {} (12_04-bee ", built[0])), "{out}");
    assert_eq!(out.matches("would deregister").count(), 1, "{out}");
    assert_eq!(moto.group_image_ids(GROUP).len(), 3, "a dry run changes nothing");

    let out = moto.gantry(s.dir.path(), &["packer:clean", GROUP, "-n", "2"]).ok();
    assert!(out.starts_with(&format!("deregistered {} ", built[0])), "{out}");
    let mut kept = built[1..].to_vec();
    kept.sort();
    assert_eq!(moto.group_image_ids(GROUP), kept);
    let snapshots: Vec<String> = block_on(moto.ec2().describe_snapshots().owner_ids("self").send())
        .unwrap()
        .snapshots()
        .iter()
        .filter_map(|snap| snap.snapshot_id().map(str::to_string))
        .collect();
    assert!(!snapshots.iter().any(|snap| doomed_snapshots.contains(snap)), "the deregistered AMI's snapshots are deleted");

    let out = moto.gantry(s.dir.path(), &["packer:clean", GROUP, "-n", "2"]).ok();
    assert!(out.starts_with("nothing to clean: group 12_04-bee has 2 AMI(s)"), "{out}");
}

#[test]
fn packer_delete_removes_the_groups_amis_and_template_only() {
    let moto = Moto::start();
    let s = example_for_moto(&moto);
    let ec2 = moto.ec2();
    // Things that are not the group's: an instance, another group's AMI, an untagged AMI.
    let instance = block_on(ec2.run_instances().image_id(MOTO_SOURCE_AMI).min_count(1).max_count(1).send()).unwrap();
    let instance_id = instance.instances()[0].instance_id().unwrap().to_string();
    let other = block_on(ec2.create_image().instance_id(&instance_id).name("other").send()).unwrap();
    let other = other.image_id().unwrap().to_string();
    block_on(ec2.create_tags().resources(&other).tags(Tag::builder().key("group").value("12_04-api").build()).send()).unwrap();
    let untagged = block_on(ec2.create_image().instance_id(&instance_id).name("untagged").send()).unwrap();
    let untagged = untagged.image_id().unwrap().to_string();
    let built = packer_run(&moto, &s);

    let out = moto.gantry(s.dir.path(), &["packer:delete", GROUP]).ok();
    assert!(out.starts_with(&format!("deregistered {built} ")), "{out}");
    assert!(out.ends_with("removed packer/12_04-bee.json\n"), "{out}");
    assert!(!s.path("packer/12_04-bee.json").exists());
    assert!(s.path("packer/12_04-api.json").exists());
    let mut left: Vec<String> = moto.own_images().into_iter().map(|(id, _)| id).collect();
    left.sort();
    let mut expected = vec![other, untagged];
    expected.sort();
    assert_eq!(left, expected);
    let running = block_on(
        ec2.describe_instances()
            .filters(Filter::builder().name("instance-state-name").values("running").build())
            .send(),
    )
    .unwrap();
    let running: Vec<_> = running.reservations().iter().flat_map(|r| r.instances()).filter_map(|i| i.instance_id()).collect();
    assert_eq!(running, [instance_id.as_str()]);
}

#[test]
fn aws_commands_say_when_credentials_are_missing() {
    let s = Scratch::example();
    let out = aws_command(s.dir.path(), &["packer:clean", GROUP, "-n", "1"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("error: no AWS credentials: set AWS_ACCESS_KEY_ID"), "{}", run.stderr);
}
