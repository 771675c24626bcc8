//! The certificates of a `gantry up` stack, in `.gantry/tls/` (0700, keys
//! 0600): a CA of the stack's own, the server's certificate (127.0.0.1,
//! localhost), one agent certificate per node naming its loopback address,
//! and the operator's, which `up`, `status` and every command run inside
//! the repository present. The first `up` makes them; the next ones keep
//! every certificate that still fits and make only what is missing, so a
//! running node's certificate is not swapped under it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use gantry_tls::config::{ClientTls, TrustedCa};
use gantry_tls::{CA_FILE, CA_KEY_FILE, CA_VALIDITY, Ca, CertRequest, Role};

use super::Node;

/// The directory under `.gantry/`.
pub const TLS_DIR: &str = "tls";
/// The server's certificate (`server.pem`, `server-key.pem`). Node names
/// always carry a `-` (`<group>-<n>`, `lb-<federation>`), so neither this
/// nor [`OPERATOR`] can be a node's.
const SERVER: &str = "server";
/// The operator's certificate: what `up`, `status` and the CLI present.
const OPERATOR: &str = "operator";
/// Prometheus' certificate (role metrics): it scrapes agents' `/metrics`
/// with it, and may read nothing else of an agent.
const PROMETHEUS: &str = "prometheus";
/// A certificate this close to its end is replaced by the next `up`, so a
/// stack brought up again now and then never runs into an expiry.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where a stack's TLS files are, and the flags that hand them to its
/// processes.
#[derive(Debug, Clone)]
pub struct StackTls {
    dir: PathBuf,
}

impl StackTls {
    /// The TLS directory of the stack whose state is in `state` (`.gantry`).
    pub fn of(state: &Path) -> StackTls {
        StackTls { dir: state.join(TLS_DIR) }
    }

    /// Whether the stack has a CA (one started by a `gantry up` that ran
    /// plain HTTP has none).
    pub fn exists(&self) -> bool {
        self.ca().exists()
    }

    fn ca(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }

    /// `gantry server`'s: HTTPS with the server's certificate, and only
    /// clients presenting a certificate of the stack's CA.
    pub fn server_args(&self) -> Vec<OsString> {
        vec![
            "--tls-cert".into(),
            self.cert(SERVER).into(),
            "--tls-key".into(),
            self.key(SERVER).into(),
            "--tls-ca".into(),
            self.ca().into(),
            "--verify-incoming".into(),
        ]
    }

    /// A node's agent's: trust the stack's CA, present the node's own certificate.
    pub fn agent_args(&self, node: &str) -> Vec<OsString> {
        vec![
            "--ca-cert".into(),
            self.ca().into(),
            "--client-cert".into(),
            self.cert(node).into(),
            "--client-key".into(),
            self.key(node).into(),
        ]
    }

    /// The CA's file.
    pub fn ca_file(&self) -> PathBuf {
        self.ca()
    }

    /// Prometheus' certificate and key files.
    pub fn prometheus(&self) -> (PathBuf, PathBuf) {
        (self.cert(PROMETHEUS), self.key(PROMETHEUS))
    }

    /// An etcd member's (`up --ha`): the CA it trusts for clients, and the
    /// server's certificate and key (they name 127.0.0.1).
    pub fn etcd_server_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        (self.ca(), self.cert(SERVER), self.key(SERVER))
    }

    /// What the servers present to etcd (`up --ha`): the CA that signed
    /// etcd's certificate, and the operator's certificate and key.
    pub fn etcd_client_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        (self.ca(), self.cert(OPERATOR), self.key(OPERATOR))
    }

    /// What the operator's commands talk to the stack's server with.
    pub fn operator(&self) -> anyhow::Result<ClientTls> {
        ClientTls::load(&self.ca(), Some((&self.cert(OPERATOR), &self.key(OPERATOR)))).with_context(|| {
            format!(
                "the stack's operator certificate in {} cannot be used\n = help: run `gantry up` again to make what is missing, or `gantry down --purge` and `gantry up` to start over",
                self.dir.display()
            )
        })
    }
}

/// What [`ensure`] made.
#[derive(Debug, Default)]
pub struct Made {
    /// A new CA: certificates a running server or agent holds are not of it.
    pub ca: bool,
    /// The certificates issued (the others were kept).
    pub certificates: Vec<String>,
}

/// Makes sure the stack's CA exists (made when neither of its files does)
/// and that the server, the operator and every node in `nodes` have a
/// certificate of it that names them and their address and is valid for
/// [`RENEW_BEFORE`] more; issues the rest. `repo` names the CA.
pub fn ensure(tls: &StackTls, repo: &str, nodes: &[Node]) -> anyhow::Result<Made> {
    super::private_dir(&tls.dir)?;
    let mut made = Made::default();
    let (ca_file, ca_key) = (tls.ca(), tls.dir.join(CA_KEY_FILE));
    let ca = if !ca_file.exists() && !ca_key.exists() {
        let ca = Ca::create(&format!("up {repo}"), CA_VALIDITY)?;
        gantry_tls::write_private(&ca_key, ca.key_pem().as_bytes())?;
        gantry_tls::write_public(&ca_file, ca.cert_pem().as_bytes())?;
        made.ca = true;
        ca
    } else {
        Ca::load(&tls.dir).with_context(|| {
            format!(
                "the stack's CA in {} cannot be used\n = help: `gantry down --purge` removes the stack's state, CA included; the next `gantry up` makes a new one",
                tls.dir.display()
            )
        })?
    };
    let trusted = TrustedCa::from_pem(ca.cert_pem(), &ca_file.display().to_string())?;
    let mut wanted = vec![
        CertRequest::new(Role::Server, SERVER),
        CertRequest::new(Role::Client, OPERATOR),
        CertRequest::new(Role::Metrics, PROMETHEUS),
    ];
    for node in nodes {
        let mut request = CertRequest::new(Role::Agent, &node.name);
        request.ips = vec![node.address.parse().with_context(|| format!("the address of node {}", node.name))?];
        wanted.push(request);
    }
    let renew_at = SystemTime::now() + RENEW_BEFORE;
    // A thread per certificate: each file and its directory are fsynced,
    // and on the shared 2-core machine's disk the example's CA and seven
    // certificates written one after the other took 0.2 s of `up`'s start
    // (32 fsyncs, next to no CPU); side by side their fsyncs overlap and
    // it is under 0.05 s.
    let outcomes: Vec<anyhow::Result<Option<String>>> = std::thread::scope(|scope| {
        let threads: Vec<_> = wanted
            .into_iter()
            .map(|request| {
                let (ca, trusted) = (&ca, &trusted);
                scope.spawn(move || {
                    let (cert, key) = (tls.cert(&request.name), tls.key(&request.name));
                    if fits(trusted, &cert, &key, &request, renew_at) {
                        return Ok(None);
                    }
                    let issued = ca.issue(&request)?;
                    // The key first: a certificate is never on disk without its key.
                    gantry_tls::write_private(&key, issued.key_pem.as_bytes())?;
                    gantry_tls::write_public(&cert, issued.cert_pem.as_bytes())?;
                    Ok(Some(request.name))
                })
            })
            .collect();
        threads.into_iter().map(|thread| thread.join().expect("issuing a certificate does not panic")).collect()
    });
    for outcome in outcomes {
        made.certificates.extend(outcome?);
    }
    Ok(made)
}

/// Whether the certificate in `cert` (with its key beside it) is what
/// `request` asks for: signed by the CA, valid at `renew_at`, of its role
/// and name, naming its addresses.
fn fits(trusted: &TrustedCa, cert: &Path, key: &Path, request: &CertRequest, renew_at: SystemTime) -> bool {
    let Ok(pem) = std::fs::read_to_string(cert) else { return false };
    let Ok(holder) = trusted.verify(&pem, &cert.display().to_string(), renew_at) else { return false };
    key.exists()
        && holder.role == Some(request.role)
        && holder.name == request.name
        && request.ips.iter().all(|ip| holder.ips.contains(ip))
}
