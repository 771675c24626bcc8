//! `instance:create` (key pair import or reuse from a private key file,
//! zone, tags, the instance's dna file) and `instance:list`.

use super::{Moto, example_for_moto, key_material, new_key, packer_run, tags};
use crate::block_on;

const WWW: &str = "12_04-www";

/// The public key moto holds for key pair `name`: `TYPE BASE64`.
fn imported_key(moto: &Moto, name: &str) -> String {
    let out = block_on(moto.ec2().describe_key_pairs().key_names(name).include_public_key(true).send()).unwrap();
    key_material(out.key_pairs()[0].public_key().unwrap())
}

#[test]
fn instance_create_imports_the_key_tags_the_node_and_writes_its_dna() {
    let moto = Moto::start();
    let s = example_for_moto(&moto);
    let dir = s.dir.path();
    let keys = tempfile::tempdir().unwrap();
    let deploy = keys.path().join("deploy.pem");
    let deploy_public = new_key(&deploy, &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
    assert!(std::fs::read_to_string(&deploy).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let deploy = deploy.to_str().unwrap();

    let err = moto.gantry(dir, &["instance:create", WWW, "--key", "missing.pem", "--name", "www-1"]).bad_input();
    assert!(err.starts_with("error: --key missing.pem: cannot read it"), "{err}");
    let run = moto.gantry(dir, &["instance:create", WWW, "--key", deploy, "--name", "www-1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("group 12_04-www has no AMI in us-east-1: build one with `gantry packer:run 12_04-www`"),
        "{run:?}"
    );
    let ami = packer_run(&moto, &s, WWW);
    let err = moto
        .gantry(dir, &["instance:create", WWW, "--key", deploy, "--name", "www-1", "--zone", "mars-1a"])
        .bad_input();
    assert!(
        err.contains("--zone mars-1a is not an available zone of us-east-1") && err.contains("us-east-1b"),
        "{err}"
    );
    assert!(
        block_on(moto.ec2().describe_key_pairs().send()).unwrap().key_pairs().is_empty(),
        "bad input imports nothing"
    );

    let run = moto.gantry(dir, &["instance:create", WWW, "--key", deploy, "--name", "www-1", "--zone", "us-east-1b"]);
    assert!(run.stderr.contains("imported the public key as key pair deploy in us-east-1"), "{run:?}");
    let id = run.ok().trim().to_string();
    assert!(id.starts_with("i-"), "{id}");
    assert_eq!(
        imported_key(&moto, "deploy"),
        deploy_public,
        "the public key derived from the PEM, as ssh-keygen derives it"
    );

    let instance = moto.instances(std::slice::from_ref(&id)).remove(0);
    assert_eq!(instance.image_id(), Some(ami.as_str()));
    assert_eq!(instance.instance_type().map(|t| t.as_str()), Some("m3.xlarge"));
    assert_eq!(instance.key_name(), Some("deploy"));
    assert_eq!(instance.placement().and_then(|p| p.availability_zone()), Some("us-east-1b"));
    assert_eq!(tags(instance.tags()), [("Name".into(), "www-1".into()), ("group".into(), WWW.into())]);
    let dna: serde_json::Value = serde_json::from_str(&s.read(&format!("dna/instance/12_04-www-{id}.json"))).unwrap();
    assert_eq!(dna, serde_json::json!({"id": format!("12_04-www-{id}"), "run_list": ["role[role-12_04-www]"]}));

    // The same key again: reused, in a random zone of the region.
    let run = moto.gantry(dir, &["instance:create", WWW, "--key", deploy, "--name", "www-2", "--json"]);
    assert!(run.stderr.contains("reusing key pair deploy in us-east-1"), "{run:?}");
    let second: serde_json::Value = serde_json::from_str(&run.ok()).unwrap();
    let zones = block_on(moto.ec2().describe_availability_zones().send()).unwrap();
    let zones: Vec<&str> = zones.availability_zones().iter().filter_map(|z| z.zone_name()).collect();
    assert!(zones.contains(&second["zone"].as_str().unwrap()), "{second}");
    assert!(s.path(&format!("dna/instance/12_04-www-{}.json", second["instance_id"].as_str().unwrap())).is_file());

    // Another key under the same name is refused; an OpenSSH ed25519 key is imported.
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("deploy.pem");
    new_key(&other, &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
    let run = moto.gantry(dir, &["instance:create", WWW, "--key", other.to_str().unwrap(), "--name", "www-3"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("key pair deploy exists in us-east-1 with another public key"), "{run:?}");
    let ops = keys.path().join("ops");
    let ops_public = new_key(&ops, &["-t", "ed25519"]);
    assert!(std::fs::read_to_string(&ops).unwrap().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    moto.gantry(dir, &["instance:create", WWW, "--key", ops.to_str().unwrap(), "--name", "www-3"]).ok();
    assert_eq!(imported_key(&moto, "ops"), ops_public);

    // instance:list shows the three, with their names.
    let listed: serde_json::Value = serde_json::from_str(&moto.gantry(dir, &["instance:list", "--json"]).ok()).unwrap();
    let mut names: Vec<&str> = listed.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["www-1", "www-2", "www-3"]);
    let table = moto.gantry(dir, &["instance:list", WWW]).ok();
    let row: Vec<&str> = table.lines().find(|l| l.contains(&id)).unwrap().split_whitespace().collect();
    assert_eq!(row[..7], [WWW, &id, "www-1", "running", "m3.xlarge", "us-east-1b", &ami], "{table}");
}
