//! What the AWS commands share (over gantry-aws, the only crate that sees
//! the SDK): how to reach AWS for a group, and what `autoscale:run|update`
//! and `instance:create` launch a group's nodes with: its newest AMI (or
//! `--ami`), instance type, security groups, IAM profile, a key pair
//! imported from `--key`, and user data that writes the group's dna and
//! starts `gantry agent`.

use std::path::Path;

use anyhow::Context as _;
use gantry_aws::{Aws, Connect, Image, KeyPair, LaunchSpec, PublicKey};
use gantry_spec::NodeGroup;

use crate::BadInput;
use crate::cli::LaunchArgs;
use crate::repo::Opened;

/// How to reach AWS for `group` (any group when `None`): the group's
/// `region` is the fallback when the environment names none; without a
/// group, the region every group of nodes.json shares. A group no longer
/// in nodes.json can still have things in AWS to clean or list.
pub fn connect_for(opened: &Opened, group: Option<&str>, endpoint_url: Option<&str>) -> Connect {
    let groups = &opened.repo.groups;
    let fallback_region = match group {
        Some(name) => groups.get(name).and_then(|g| g.region.clone()),
        None => {
            let mut regions = groups.values().filter_map(|g| g.region.as_deref());
            let first = regions.next();
            first.filter(|r| regions.all(|other| other == *r)).map(str::to_string)
        }
    };
    Connect { endpoint_url: endpoint_url.map(str::to_string), fallback_region, region: None }
}

/// Where the user data puts the dna on a node.
pub const NODE_DNA_PATH: &str = "/etc/gantry/dna.json";

/// What is checked and read on this machine before AWS is called.
#[derive(Debug)]
pub struct Plan<'a> {
    pub group: &'a NodeGroup,
    pub instance_type: String,
    /// The key pair's name (the key file's stem) and the public key.
    pub key: Option<(String, PublicKey)>,
    pub user_data: String,
}

/// Checks the request against the repository and reads the key file: bad
/// input is found before anything is asked of AWS.
pub fn plan<'a>(
    opened: &'a Opened,
    group: &str,
    launch: &LaunchArgs,
    key: Option<&Path>,
    dna: &[u8],
) -> anyhow::Result<Plan<'a>> {
    let group = opened.repo.group(group).map_err(|d| opened.bad_input(vec![d]))?;
    let Some(instance_type) = group.instance_type.clone() else {
        return Err(BadInput(format!(
            "error: group \"{}\" has no \"instance_type\"\n = help: add \"instance_type\" to the group, or to \"__base__\" for every group",
            group.name
        ))
        .into());
    };
    if !(launch.server.starts_with("http://") || launch.server.starts_with("https://")) {
        return Err(BadInput(format!(
            "error: --server {:?} is not an http:// or https:// URL\n = help: the address of the gantry server the nodes' agents report to, as they reach it",
            launch.server
        ))
        .into());
    }
    let key = key.map(key_pair_of).transpose()?;
    Ok(Plan { group, instance_type, key, user_data: user_data(&group.name, dna, &launch.server) })
}

/// Makes the launch concrete against AWS: the AMI, the key pair (imported
/// or reused), the security groups' ids.
pub async fn launch_spec(aws: &Aws, plan: &Plan<'_>, ami: Option<&str>) -> anyhow::Result<(LaunchSpec, Image)> {
    let group = plan.group;
    let image = match ami {
        Some(id) => aws.image(id).await?,
        None => aws.group_images(&group.name).await?.into_iter().next().with_context(|| {
            format!(
                "group {} has no AMI in {}: build one with `gantry packer:run {}`",
                group.name,
                aws.region(),
                group.name
            )
        })?,
    };
    if let Some((name, public_key)) = &plan.key {
        let what = match aws.key_pair(name, public_key).await? {
            KeyPair::Imported => "imported the public key as key pair",
            KeyPair::Reused => "reusing key pair",
        };
        eprintln!("{what} {name} in {}", aws.region());
    }
    let security_group_ids = aws.security_group_ids(&group.security_groups, group.vpc_id.as_deref()).await?;
    let spec = LaunchSpec {
        image_id: image.id.clone(),
        instance_type: plan.instance_type.clone(),
        key_name: plan.key.as_ref().map(|(name, _)| name.clone()),
        security_group_ids,
        subnet_id: group.subnet_id.clone(),
        iam_instance_profile: group.iam_instance_profile.clone(),
        user_data: plan.user_data.clone(),
    };
    Ok((spec, image))
}

/// The key pair a key file stands for: named after the file (`deploy.pem`
/// is key pair `deploy`, as EC2 names the files it hands out).
fn key_pair_of(path: &Path) -> anyhow::Result<(String, PublicKey)> {
    let name = path.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty());
    let Some(name) = name else {
        return Err(BadInput(format!(
            "error: --key {}: the file name names the key pair, and this one has none",
            path.display()
        ))
        .into());
    };
    let public_key = gantry_aws::public_key_of(path).map_err(|e| BadInput(format!("error: --key {e}")))?;
    Ok((name.to_string(), public_key))
}

/// The boot script of a node: writes the dna, then runs `gantry agent`
/// for the group under systemd (restarted if it dies), its provision
/// command `chef-solo` on that dna. The AMI must have `gantry` and
/// `chef-solo` on the PATH. Nothing secret goes in: user data is readable
/// by anything on the node and by anyone who may describe the instance.
pub fn user_data(group: &str, dna: &[u8], server: &str) -> String {
    let mut dna = String::from_utf8_lossy(dna).into_owned();
    if !dna.ends_with('\n') {
        dna.push('\n');
    }
    format!(
        "#!/bin/sh\n\
         # Written by gantry for node group {group}: its dna, then its agent.\n\
         set -eu\n\
         mkdir -p /etc/gantry\n\
         cat > {NODE_DNA_PATH} <<'GANTRY_DNA'\n\
         {dna}GANTRY_DNA\n\
         systemd-run --unit=gantry-agent --property=Restart=always \"$(command -v gantry)\" agent \\\n  \
         --server {server} --group {group} --data-dir /var/lib/gantry/agent \\\n  \
         --provision-cmd 'chef-solo -j {NODE_DNA_PATH}'\n",
        server = shell_quote(server),
    )
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    #[test]
    fn user_data_writes_the_dna_and_starts_the_agent() {
        let dna = b"{\n  \"id\": \"12_04-bee\",\n  \"run_list\": [\n    \"role[role-12_04-bee]\"\n  ]\n}\n";
        expect![[r#"
            #!/bin/sh
            # Written by gantry for node group 12_04-bee: its dna, then its agent.
            set -eu
            mkdir -p /etc/gantry
            cat > /etc/gantry/dna.json <<'GANTRY_DNA'
            {
              "id": "12_04-bee",
              "run_list": [
                "role[role-12_04-bee]"
              ]
            }
            GANTRY_DNA
            systemd-run --unit=gantry-agent --property=Restart=always "$(command -v gantry)" agent \
              --server 'http://10.0.0.5:7400' --group 12_04-bee --data-dir /var/lib/gantry/agent \
              --provision-cmd 'chef-solo -j /etc/gantry/dna.json'
        "#]]
        .assert_eq(&super::user_data("12_04-bee", dna, "http://10.0.0.5:7400"));
        assert!(super::user_data("g", b"{}", "http://x/it's").contains(r"'http://x/it'\''s'"));
    }
}
