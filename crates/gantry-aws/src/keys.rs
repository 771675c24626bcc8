//! The public half of a private key file, for importing an EC2 key pair:
//! the private key is read here and never leaves this machine.
//!
//! Read formats: PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`, what EC2 hands out for
//! RSA key pairs), PKCS#8 PEM holding an RSA key (`BEGIN PRIVATE KEY`), and
//! OpenSSH (`BEGIN OPENSSH PRIVATE KEY`, any algorithm, encrypted or not:
//! its public key is stored in the clear). For anything else (an
//! encrypted PKCS#8 file, an EC key in PEM) a `.pub` file beside the key
//! (`key.pem` -> `key.pub`, or `key.pem.pub`) is used.

use std::path::{Path, PathBuf};

use pkcs1::der::Decode;
use ssh_key::public::{KeyData, RsaPublicKey};
use ssh_key::{Mpint, PrivateKey};

use crate::Error;

/// An OpenSSH public key (`ssh-rsa AAAA...`), without comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(ssh_key::PublicKey);

impl PublicKey {
    /// The `authorized_keys` form EC2 imports.
    pub fn openssh(&self) -> String {
        self.0.to_openssh().expect("a decoded key encodes")
    }

    /// Whether `other` (an OpenSSH public key line, as EC2 returns it, with
    /// or without a comment) is this key.
    pub fn same_key_as(&self, other: &str) -> bool {
        ssh_key::PublicKey::from_openssh(other.trim()).is_ok_and(|k| k.key_data() == self.0.key_data())
    }
}

/// The public key of the private key file at `path`.
pub fn public_key_of(path: &Path) -> Result<PublicKey, Error> {
    let problem = |problem: String| Error::KeyFile { path: path.display().to_string(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read it ({e})")))?;
    if let Some(key) = from_private_pem(&text) {
        return Ok(PublicKey(key));
    }
    for pub_path in beside(path) {
        if let Ok(line) = std::fs::read_to_string(&pub_path) {
            return ssh_key::PublicKey::from_openssh(line.trim())
                .map(|k| PublicKey(ssh_key::PublicKey::new(k.key_data().clone(), "")))
                .map_err(|e| problem(format!("{} is no OpenSSH public key ({e})", pub_path.display())));
        }
    }
    Err(problem(format!(
        "no public key can be read from it (PKCS#1, PKCS#8 RSA and OpenSSH private keys can): write it beside the key with `ssh-keygen -y -f {} > {}`",
        path.display(),
        path.with_extension("pub").display()
    )))
}

/// The public key of an unencrypted PKCS#1 or PKCS#8 RSA key, or of any
/// OpenSSH private key.
fn from_private_pem(text: &str) -> Option<ssh_key::PublicKey> {
    if let Ok(key) = PrivateKey::from_openssh(text) {
        return Some(ssh_key::PublicKey::new(key.public_key().key_data().clone(), ""));
    }
    let (label, der) = pkcs1::der::pem::decode_vec(text.trim().as_bytes()).ok()?;
    let rsa_der = match label {
        "RSA PRIVATE KEY" => der,
        "PRIVATE KEY" => pkcs8::PrivateKeyInfo::from_der(&der).ok()?.private_key.to_vec(),
        _ => return None,
    };
    let rsa = pkcs1::RsaPrivateKey::from_der(&rsa_der).ok()?;
    let public = RsaPublicKey {
        e: Mpint::from_positive_bytes(rsa.public_exponent.as_bytes()).ok()?,
        n: Mpint::from_positive_bytes(rsa.modulus.as_bytes()).ok()?,
    };
    Some(ssh_key::PublicKey::new(KeyData::Rsa(public), ""))
}

/// Where a public key may sit beside a private key.
fn beside(path: &Path) -> [PathBuf; 2] {
    let mut appended = path.as_os_str().to_owned();
    appended.push(".pub");
    [path.with_extension("pub"), PathBuf::from(appended)]
}
