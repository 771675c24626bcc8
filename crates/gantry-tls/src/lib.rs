//! Gantry's built-in certificate authority (`gantry tls:ca:create`,
//! `gantry tls:cert:create`): one CA per installation, and certificates it
//! signs for servers, agents and clients, each carrying its role the way
//! Nomad's do (a DNS name `server.gantry`, `agent.gantry` or
//! `client.gantry` beside the names and addresses it answers on), so a
//! server can tell an agent's certificate from an operator's.
//!
//! Keys are ECDSA P-256 (rcgen on ring). Private keys are written 0600 from
//! the moment their file exists ([`write_private`]), never narrowed after.
//!
//! The same certificates then secure the API: [`config`] turns them into
//! rustls configurations (a server's, with or without client certificates,
//! or only certificates of one role; a client's, trusting Gantry's CA and
//! nothing else), [`listener`] serves axum over TLS with the verified peer
//! certificate's holder per connection, and [`problem`] says in a user's
//! words why a handshake failed.
//!
//! Architecture invariant: no private key appears in a `Debug` output or an
//! error of this crate.
#![forbid(unsafe_code)]

pub mod config;
pub mod listener;
pub mod problem;

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The CA certificate's file name in a TLS directory.
pub const CA_FILE: &str = "ca.pem";
/// The CA's private key's file name.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How long a CA is valid unless told otherwise: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a certificate is valid unless told otherwise: one year.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a certificate is for; it is written into the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A `gantry server`: serves the API (and is a client of agents' APIs).
    Server,
    /// A `gantry agent`: a client of the servers, and serves its own API.
    Agent,
    /// An operator's CLI or an application: a client only.
    Client,
    /// A metrics collector (Prometheus): a client that may scrape agents'
    /// `/metrics`, and nothing else of an agent's API.
    Metrics,
}

impl Role {
    /// The DNS name every certificate of this role carries.
    pub fn dns_name(self) -> &'static str {
        match self {
            Role::Server => "server.gantry",
            Role::Agent => "agent.gantry",
            Role::Client => "client.gantry",
            Role::Metrics => "metrics.gantry",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
            Role::Client => "client",
            Role::Metrics => "metrics",
        }
    }

    fn usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Role::Server | Role::Agent => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
            Role::Client | Role::Metrics => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused (a name that is not a valid DNS name, a malformed key).
    #[error("{what}: {source}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    /// A name that is not a DNS name (letters, digits, `-`, dot-separated labels).
    #[error("{name:?} is not a DNS name: use letters, digits and `-` in dot-separated labels, such as api.example.com")]
    InvalidDnsName { name: String },
    /// A PEM file that is not what it should be.
    #[error("{what} is not a PEM certificate Gantry can read")]
    NotACertificate { what: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file without the private key it should hold.
    #[error("{what} holds no private key Gantry can read (PKCS#8, SEC1 or PKCS#1 PEM)")]
    NotAKey { what: String },
    /// rustls refused a configuration (a key that does not match its
    /// certificate, a CA file it cannot use).
    #[error("{what}: {source}")]
    Config {
        what: String,
        #[source]
        source: rustls::Error,
    },
    /// A client-certificate verifier could not be built from the CA file.
    #[error("{what}: {source}")]
    Verifier {
        what: String,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

fn rcgen_error(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> TlsError {
    let what = what.into();
    move |source| TlsError::Certificate { what, source }
}

/// A certificate authority: its certificate and private key, as PEM.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("cert_pem", &self.cert_pem).field("key_pem", &"(private)").finish()
    }
}

/// What to put in a certificate.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub role: Role,
    /// The subject's common name: the server's or machine's name, the operator's.
    pub name: String,
    /// Addresses the holder answers on (servers, agents), checked by clients.
    pub ips: Vec<IpAddr>,
    /// DNS names the holder answers on, besides its role's.
    pub dns: Vec<String>,
    pub valid_for: Duration,
    /// When its validity starts; `None`: a minute ago (slack for clocks a
    /// little behind the CA's). Tests make expired certificates with it.
    pub not_before: Option<SystemTime>,
}

impl CertRequest {
    /// A certificate of `role` for `name`, valid for [`CERT_VALIDITY`],
    /// with no address or name but its role's.
    pub fn new(role: Role, name: impl Into<String>) -> CertRequest {
        CertRequest {
            role,
            name: name.into(),
            ips: Vec::new(),
            dns: Vec::new(),
            valid_for: CERT_VALIDITY,
            not_before: None,
        }
    }
}

/// A certificate the CA signed and its private key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"(private)").finish()
    }
}

impl Ca {
    /// A new CA named `name` (its certificate's common name is
    /// `Gantry CA <name>`), valid for `valid_for` from now.
    pub fn create(name: &str, valid_for: Duration) -> Result<Ca, TlsError> {
        let key = KeyPair::generate().map_err(rcgen_error("generating the CA's key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("Gantry CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, None, valid_for);
        let cert = params.self_signed(&key).map_err(rcgen_error("signing the CA certificate"))?;
        Ok(Ca { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The CA from its certificate and key (as `tls:ca:create` wrote them).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error("the CA's key"))?;
        // Proves the pair is usable as an issuer before anything is signed.
        Issuer::from_ca_cert_pem(cert_pem, key).map_err(rcgen_error("the CA certificate"))?;
        Ok(Ca { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() })
    }

    /// Reads `ca.pem` and `ca-key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Io { what: "reading", path, source })
        };
        Ca::from_pem(&read(CA_FILE)?, &read(CA_KEY_FILE)?)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Signs a new certificate (with a new key) as `request` says. Every
    /// certificate names its role (`server.gantry`, ...); a server's also
    /// answers on `localhost` and 127.0.0.1, where `gantry up` runs it.
    pub fn issue(&self, request: &CertRequest) -> Result<Issued, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(rcgen_error("the CA's key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(rcgen_error("the CA certificate"))?;
        let key = KeyPair::generate().map_err(rcgen_error("generating a key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&request.name);
        let mut dns: Vec<String> = vec![request.role.dns_name().to_owned()];
        let mut ips = request.ips.clone();
        if request.role == Role::Server {
            dns.push("localhost".to_owned());
            ips.push(IpAddr::from([127, 0, 0, 1]));
        }
        dns.extend(request.dns.iter().cloned());
        dns.dedup();
        ips.sort();
        ips.dedup();
        for name in &dns {
            if !is_dns_name(name) {
                return Err(TlsError::InvalidDnsName { name: name.clone() });
            }
            let name = name.as_str().try_into().map_err(rcgen_error(format!("DNS name {name:?}")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params.subject_alt_names.extend(ips.into_iter().map(SanType::IpAddress));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = request.role.usages();
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, request.not_before, request.valid_for);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(rcgen_error(format!("signing the certificate of {}", request.name)))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Dot-separated labels of letters, digits and `-` (not at a label's ends),
/// 63 characters a label, 253 in all; a leading `*.` is a wildcard.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Gantry");
    name
}

fn set_validity(params: &mut CertificateParams, not_before: Option<SystemTime>, valid_for: Duration) {
    // A minute of slack for clocks a little behind the CA's.
    let start = match not_before {
        Some(start) => time::OffsetDateTime::from(start),
        None => time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
    };
    params.not_before = start;
    params.not_after = start.saturating_add(time::Duration::try_from(valid_for).unwrap_or(time::Duration::MAX));
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The common name.
    pub name: String,
    /// The role, from its `<role>.gantry` name; `None` for a certificate
    /// without one (not made by Gantry's CA).
    pub role: Option<Role>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Reads the holder of a DER certificate (a peer's, during a handshake).
pub fn holder_of_der(der: &[u8]) -> Result<Holder, TlsError> {
    let not_cert = || TlsError::NotACertificate { what: "the peer's certificate".into() };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| not_cert())?;
    let name =
        cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned).unwrap_or_default();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        for san in &sans.value.general_names {
            match san {
                x509_parser::extensions::GeneralName::DNSName(name) => dns.push((*name).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*bytes).map_err(|_| not_cert())?)),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*bytes).map_err(|_| not_cert())?)),
                    _ => return Err(not_cert()),
                },
                _ => {}
            }
        }
    }
    let role = [Role::Server, Role::Agent, Role::Client, Role::Metrics]
        .into_iter()
        .find(|r| dns.iter().any(|d| d == r.dns_name()));
    Ok(Holder { name, role, dns, ips })
}

/// Reads the holder of the first certificate in a PEM text.
pub fn holder_of_pem(pem: &str) -> Result<Holder, TlsError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| TlsError::NotACertificate { what: "the PEM text".into() })?;
    holder_of_der(&block.contents)
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, fsync,
/// rename), the file mode 0600 from its creation: for private keys and
/// tokens, which must never be readable by others, not even for a moment.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_atomic(path, bytes, 0o600)
}

/// Writes `bytes` to `path` atomically, mode 0644 (certificates: public).
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_atomic(path, bytes, 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |what, source| TlsError::Io { what, path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(|source| io("writing", source))
}

#[cfg(test)]
mod tests;
