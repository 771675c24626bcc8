//! The AWS commands against a real moto server (one per test, on its own
//! loopback port, so every test starts from moto's pristine state) and the
//! real `packer` binary; outcomes are checked by asking moto through the SDK.
//!
//! Moto keeps its default AMIs (they are the only images whose root device
//! is EBS, which packer's amazon-ebs builder insists on): the example's
//! source AMI becomes moto's Ubuntu image, and Gantry finds a group's AMIs
//! by owner (`self`) and `group` tag, never by listing everything.

mod autoscale;
mod instance;
mod packer;
mod throttle;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Run, Scratch, block_on};

/// A moto AMI with an EBS root device, which packer accepts as a source.
const MOTO_SOURCE_AMI: &str = "ami-1e749f67";
const GROUP: &str = "12_04-bee";
/// The server the nodes' agents would report to: only written into user data.
const AGENT_SERVER: &str = "http://127.0.0.1:7400";

/// A `moto_server` child process on a free loopback port; killed on drop.
pub(crate) struct Moto {
    child: Child,
    url: String,
    port: u16,
}

impl Moto {
    pub(crate) fn start() -> Moto {
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
        let mut moto = Moto { child, url: format!("http://127.0.0.1:{port}"), port };
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
        Run::from(self.command(dir, args).output().expect("running gantry"))
    }

    /// The command [`Moto::gantry`] runs, for tests that start it in the background.
    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = aws_command(dir, args);
        command.env("AWS_ENDPOINT_URL", &self.url).env("GANTRY_SERVER", AGENT_SERVER);
        command
    }

    fn sdk_config(&self) -> aws_sdk_ec2::config::Builder {
        aws_sdk_ec2::Config::builder()
            .http_client(gantry_aws::http_client())
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "tests"))
            .endpoint_url(&self.url)
    }

    /// The environment a gantry process needs to reach this moto with dummy credentials.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let env = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")];
        let mut env: Vec<_> = env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        env.extend([("AWS_EC2_METADATA_DISABLED", "true".to_owned()), ("AWS_ENDPOINT_URL", self.url.clone())]);
        env
    }

    /// An S3 client of this moto (path-style: the bucket is not a host name here).
    pub(crate) fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .http_client(gantry_aws::http_client())
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "tests"))
            .endpoint_url(&self.url)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// An EC2 client of this moto, for the tests' own checks and setup.
    fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::from_conf(self.sdk_config().build())
    }

    /// An Auto Scaling client of this moto.
    fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        let config = aws_sdk_autoscaling::Config::builder()
            .http_client(gantry_aws::http_client())
            .behavior_version(aws_sdk_autoscaling::config::BehaviorVersion::latest())
            .region(aws_sdk_autoscaling::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .endpoint_url(&self.url)
            .build();
        aws_sdk_autoscaling::Client::from_conf(config)
    }

    /// (id, tags) of the AMIs this account owns, sorted by id.
    fn own_images(&self) -> Vec<(String, Vec<(String, String)>)> {
        let out = block_on(self.ec2().describe_images().owners("self").send()).unwrap();
        let mut images: Vec<_> =
            out.images().iter().map(|i| (i.image_id().unwrap().to_string(), tags(i.tags()))).collect();
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

    /// The autoscaling groups moto has, sorted by name.
    fn asgs(&self) -> Vec<aws_sdk_autoscaling::types::AutoScalingGroup> {
        let out = block_on(self.autoscaling().describe_auto_scaling_groups().send()).unwrap();
        let mut groups = out.auto_scaling_groups().to_vec();
        groups.sort_by(|a, b| a.auto_scaling_group_name().cmp(&b.auto_scaling_group_name()));
        groups
    }

    fn asg_names(&self) -> Vec<String> {
        self.asgs().iter().map(|g| g.auto_scaling_group_name().unwrap().to_string()).collect()
    }

    /// EC2's view of instances by id.
    fn instances(&self, ids: &[String]) -> Vec<aws_sdk_ec2::types::Instance> {
        let out = block_on(self.ec2().describe_instances().set_instance_ids(Some(ids.to_vec())).send()).unwrap();
        out.reservations().iter().flat_map(|r| r.instances()).cloned().collect()
    }

    /// The ids of security groups by name, in that order.
    fn security_group_ids(&self, names: &[&str]) -> Vec<String> {
        let out = block_on(self.ec2().describe_security_groups().send()).unwrap();
        names
            .iter()
            .map(|n| {
                let group = out.security_groups().iter().find(|g| g.group_name() == Some(n));
                group.and_then(|g| g.group_id()).unwrap_or_else(|| panic!("no security group {n}")).to_string()
            })
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// EC2 tags as sorted pairs.
fn tags(tags: &[aws_sdk_ec2::types::Tag]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = tags
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
        .collect();
    pairs.sort();
    pairs
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
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("GANTRY_SERVER");
    command
}

/// The example, its groups built from moto's source AMI with
/// `"communicator": "none"` (nothing to log in to), templates written, and
/// the security groups nodes.json names created in moto (as they would be
/// in the user's account).
fn example_for_moto(moto: &Moto) -> Scratch {
    let s = Scratch::example();
    s.edit(
        "nodes.json",
        "\"source_ami\": \"ami-1ebb2077\"",
        &format!("\"source_ami\": \"{MOTO_SOURCE_AMI}\", \"communicator\": \"none\""),
    );
    moto.gantry(s.dir.path(), &["packer:create"]).ok();
    let ec2 = moto.ec2();
    for name in ["external", "internal", "bee", "api", "www"] {
        block_on(ec2.create_security_group().group_name(name).description(format!("the example's {name}")).send())
            .unwrap();
    }
    s
}

/// `packer:run GROUP`, started in a second of its own (packer names AMIs
/// `<group> <unix seconds>` and refuses a name in use; against moto a build
/// takes well under a second): the AMI id, the last line of stdout.
fn packer_run(moto: &Moto, s: &Scratch, group: &str) -> String {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    std::thread::sleep(
        Duration::from_nanos(u64::from(1_000_000_000 - since_epoch.subsec_nanos())) + Duration::from_millis(20),
    );
    let out = moto.gantry(s.dir.path(), &["packer:run", group]).ok();
    let id = out.lines().last().unwrap_or_default().to_string();
    assert!(id.starts_with("ami-"), "packer:run printed no AMI id last: {out:?}");
    id
}

/// Runs `ssh-keygen` (OpenSSH's client tools; scripts/install-test-deps
/// installs them) and asserts it worked.
fn ssh_keygen(args: &[&str]) -> String {
    let out = Command::new("ssh-keygen").args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run ssh-keygen ({e}): install it with scripts/install-test-deps (Debian: apt-get install openssh-client)")
    });
    assert!(out.status.success(), "ssh-keygen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A new private key file at `path` (`-t rsa -m PEM`: PKCS#1, as EC2 hands
/// out; `-t ed25519`: OpenSSH's own format), and its public key as
/// `ssh-keygen -y` derives it: `TYPE BASE64`.
fn new_key(path: &Path, args: &[&str]) -> String {
    let mut all = vec!["-q", "-N", "", "-C", "", "-f", path.to_str().unwrap()];
    all.extend(args);
    ssh_keygen(&all);
    std::fs::remove_file(path.with_extension("pub")).ok();
    std::fs::remove_file(format!("{}.pub", path.display())).ok();
    key_material(&ssh_keygen(&["-y", "-f", path.to_str().unwrap()]))
}

/// `TYPE BASE64` of an OpenSSH public key line (the comment dropped).
fn key_material(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}
