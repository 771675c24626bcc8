//! rustls configurations from Gantry's certificates: a holder's
//! [`Identity`] (certificate and key), the [`TrustedCa`] peers are checked
//! against, a server's configuration ([`server_config`], with the client
//! certificates it asks for: [`ClientAuth`]) and a client's
//! ([`ClientTls::config`]).
//!
//! Every configuration is built on the ring provider ([`crypto_provider`]),
//! and a client trusts the CA it is given and nothing else: not the system's
//! roots, so a certificate from a public CA never passes for a Gantry
//! server.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::{Holder, Role, TlsError, holder_of_der};

/// The ALPN protocols a Gantry server offers: HTTP/2 first (a client with
/// many watches multiplexes them on one connection), then HTTP/1.1.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The crypto provider of every configuration: ring, already in the build
/// (etcd-client's and the AWS SDK's TLS use it), rather than aws-lc-rs.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default rustls provider, for the code that
/// builds a `reqwest::Client` without a configuration of ours (reqwest
/// panics without one); harmless when a default is already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate and its private key: what a server, an agent or a client
/// presents.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    holder: Holder,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("holder", &self.holder).field("key", &"(private)").finish()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity { chain: self.chain.clone(), key: self.key.clone_key(), holder: self.holder.clone() }
    }
}

impl Identity {
    /// From PEM text: the certificate (then any intermediates) and its key.
    /// `what` names them in errors ("--tls-cert server.pem").
    pub fn from_pem(cert_pem: &str, key_pem: &str, what: &str) -> Result<Identity, TlsError> {
        let chain = certificates(cert_pem, what)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| TlsError::NotAKey { what: format!("the key of {what}") })?;
        let holder = holder_of_der(&chain[0]).map_err(|_| TlsError::NotACertificate { what: what.to_owned() })?;
        Ok(Identity { chain, key, holder })
    }

    /// Reads `cert` and `key` (as `gantry tls:cert:create` wrote them).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Identity::from_pem(&read(cert)?, &read(key)?, &cert.display().to_string())
    }

    /// What the certificate says about its holder (name, role, addresses).
    pub fn holder(&self) -> &Holder {
        &self.holder
    }
}

/// The CA whose certificates a peer must present (`ca.pem`).
#[derive(Debug, Clone)]
pub struct TrustedCa {
    roots: Arc<RootCertStore>,
}

impl TrustedCa {
    /// Every certificate in `pem`; `what` names it in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<TrustedCa, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(pem, what)? {
            roots
                .add(cert)
                .map_err(|source| TlsError::Config { what: format!("{what} as a CA certificate"), source })?;
        }
        Ok(TrustedCa { roots: Arc::new(roots) })
    }

    pub fn load(path: &Path) -> Result<TrustedCa, TlsError> {
        TrustedCa::from_pem(&read(path)?, &path.display().to_string())
    }

    /// The holder of `cert_pem` if this CA signed it and it is valid at
    /// `at`: webpki's own checks, as a server's handshake makes them of a
    /// client certificate (every role's certificate may be a client's).
    /// `gantry up` asks it with a time ahead, to replace a certificate
    /// before it expires rather than after.
    pub fn verify(&self, cert_pem: &str, what: &str, at: SystemTime) -> Result<Holder, TlsError> {
        let chain = certificates(cert_pem, what)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), crypto_provider())
            .build()
            .map_err(|source| TlsError::Verifier { what: "the CA".into(), source })?;
        let since_epoch = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::since_unix_epoch(since_epoch))
            .map_err(|source| TlsError::Config { what: what.to_owned(), source })?;
        holder_of_der(&chain[0])
    }
}

/// Which client certificates a server asks for.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// None: every client is let in (by TLS; access control may still ask for a token).
    Off,
    /// Asked for and verified against the CA when presented; a client
    /// without one is let in (`gantry server --tls-ca` without `--verify-incoming`).
    Optional(TrustedCa),
    /// Required, signed by the CA (`--verify-incoming`); with `roles`, of
    /// one of those roles only (an agent's API answers servers and metrics
    /// collectors alone); empty: any role. Anything else is refused during
    /// the handshake.
    Required { ca: TrustedCa, roles: Vec<Role> },
}

impl ClientAuth {
    /// The CA client certificates are checked against, if any.
    pub fn ca(&self) -> Option<&TrustedCa> {
        match self {
            ClientAuth::Off => None,
            ClientAuth::Optional(ca) | ClientAuth::Required { ca, .. } => Some(ca),
        }
    }
}

/// A server's configuration: `identity` presented, clients asked for
/// certificates as `clients` says, HTTP/2 and HTTP/1.1 offered by ALPN.
/// Share the one `Arc` between all connections: it holds the session
/// cache that lets clients resume.
pub fn server_config(identity: &Identity, clients: &ClientAuth) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let verifier = |ca: &TrustedCa| WebPkiClientVerifier::builder_with_provider(ca.roots.clone(), provider.clone());
    let verifier_error = |source| TlsError::Verifier { what: "the CA of client certificates".into(), source };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config { what: "TLS versions".into(), source })?;
    let builder = match clients {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Optional(ca) => {
            builder.with_client_cert_verifier(verifier(ca).allow_unauthenticated().build().map_err(verifier_error)?)
        }
        ClientAuth::Required { ca, roles } => {
            let verifier = verifier(ca).build().map_err(verifier_error)?;
            builder.with_client_cert_verifier(if roles.is_empty() {
                verifier
            } else {
                Arc::new(OfRole { inner: verifier, roles: roles.clone() })
            })
        }
    };
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|source| TlsError::Config { what: format!("the certificate of {}", identity.holder.name), source })?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a client needs to talk to a Gantry server (or a server to an
/// agent): the CA to trust, and the certificate to present, if any.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: TrustedCa,
    pub identity: Option<Identity>,
}

impl ClientTls {
    /// Reads the CA file and, when given, a certificate and its key.
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let identity = identity.map(|(cert, key)| Identity::load(cert, key)).transpose()?;
        Ok(ClientTls { ca: TrustedCa::load(ca)?, identity })
    }

    /// A client configuration: the server's certificate must be signed by
    /// the CA and name the host connected to (rustls checks both).
    pub fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config { what: "TLS versions".into(), source })?
            .with_root_certificates(self.ca.roots.clone());
        match &self.identity {
            Some(identity) => {
                builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key()).map_err(|source| {
                    TlsError::Config { what: format!("the certificate of {}", identity.holder.name), source }
                })
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

/// A client configuration that trusts nothing: a client without TLS
/// settings refuses every `https://` server (rather than trusting the
/// system's roots), and the error says which CA file to give it.
pub fn trust_nothing() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// Client certificates signed by the CA and of one of some roles: the
/// CA's verifier, then the role (`server.gantry`, ...) read from the
/// certificate.
#[derive(Debug)]
struct OfRole {
    inner: Arc<dyn ClientCertVerifier>,
    roles: Vec<Role>,
}

impl ClientCertVerifier for OfRole {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match holder_of_der(end_entity) {
            Ok(holder) if holder.role.is_some_and(|role| self.roles.contains(&role)) => Ok(verified),
            // rustls answers this with an access_denied alert.
            _ => Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Every certificate in `pem`, at least one.
fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let not_cert = || TlsError::NotACertificate { what: what.to_owned() };
    let chain: Vec<_> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().map_err(|_| not_cert())?;
    if chain.is_empty() {
        return Err(not_cert());
    }
    Ok(chain)
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io { what: "reading", path: path.to_owned(), source })
}
