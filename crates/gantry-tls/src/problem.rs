//! Why a TLS connection failed, in the words of the person who must fix it:
//! [`TlsProblem::find`] digs rustls's error out of an HTTP client's error
//! chain (reqwest, hyper and tokio-rustls each wrap it) and names it.

use std::error::Error;
use std::fmt;

use rustls::{AlertDescription, CertificateError};

/// What went wrong in a handshake, seen from the side that connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    /// The peer's certificate is not signed by the CA this side trusts.
    UnknownIssuer,
    /// The peer's certificate does not name the host connected to.
    NameMismatch {
        expected: String,
        presented: Vec<String>,
    },
    /// The peer's certificate has expired (or is not valid yet).
    Expired,
    NotValidYet,
    /// The peer's certificate is not for serving (a client's).
    WrongPurpose,
    /// The peer asked for a certificate and this side had none.
    CertificateRequired,
    /// The peer refused this side's certificate (another CA's, an expired
    /// one, one of a role it does not accept); `alert` is what it said.
    CertificateRefused {
        alert: String,
    },
    /// The peer did not answer in TLS (a plain HTTP server).
    NotTls,
    Other(String),
}

impl TlsProblem {
    /// The TLS problem somewhere in `error`'s chain of sources, if any.
    pub fn find(error: &(dyn Error + 'static)) -> Option<TlsProblem> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(rustls) = e.downcast_ref::<rustls::Error>() {
                return Some(TlsProblem::of(rustls));
            }
            // io::Error's `source()` skips the error it wraps (where
            // tokio-rustls puts rustls's, sometimes in another io::Error).
            next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(inner) => Some(inner as &(dyn Error + 'static)),
                None => e.source(),
            };
        }
        None
    }

    pub fn of(error: &rustls::Error) -> TlsProblem {
        match error {
            rustls::Error::InvalidCertificate(problem) => match problem {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => TlsProblem::UnknownIssuer,
                CertificateError::NotValidForName => {
                    TlsProblem::NameMismatch { expected: String::new(), presented: Vec::new() }
                }
                CertificateError::NotValidForNameContext { expected, presented } => TlsProblem::NameMismatch {
                    expected: server_name(expected),
                    presented: presented.iter().map(|p| p.trim_matches('"').to_owned()).collect(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsProblem::Expired,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => TlsProblem::NotValidYet,
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                    TlsProblem::WrongPurpose
                }
                other => TlsProblem::Other(format!("the peer's certificate: {other:?}")),
            },
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => TlsProblem::CertificateRequired,
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError),
            ) => TlsProblem::CertificateRefused { alert: format!("{alert:?}") },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => TlsProblem::NotTls,
            other => TlsProblem::Other(other.to_string()),
        }
    }
}

fn server_name(name: &rustls::pki_types::ServerName<'_>) -> String {
    match name {
        rustls::pki_types::ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        rustls::pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsProblem::UnknownIssuer => f.write_str("its certificate is not signed by the CA trusted here"),
            TlsProblem::NameMismatch { expected, presented } if presented.is_empty() => {
                write!(f, "its certificate is not valid for {expected:?}")
            }
            TlsProblem::NameMismatch { expected, presented } => {
                write!(f, "its certificate is not valid for {expected:?} (it names {})", presented.join(", "))
            }
            TlsProblem::Expired => f.write_str("its certificate has expired"),
            TlsProblem::NotValidYet => f.write_str("its certificate is not valid yet (is a clock wrong?)"),
            TlsProblem::WrongPurpose => f.write_str("its certificate is not one for serving (a client's?)"),
            TlsProblem::CertificateRequired => f.write_str("it requires a client certificate and none was presented"),
            TlsProblem::CertificateRefused { alert } => write!(f, "it refused the certificate presented ({alert})"),
            TlsProblem::NotTls => f.write_str("it did not answer in TLS (does it serve plain HTTP?)"),
            TlsProblem::Other(message) => f.write_str(message),
        }
    }
}

/// Connects to `addr` (`host:port`) afresh with `config` and says what TLS
/// problem, if any, that connection meets: for the failures an HTTP client
/// reports without their cause. Under TLS 1.3 a server refuses a client's
/// certificate only after the client has finished its side of the
/// handshake, so its alert can arrive while the HTTP client still waits to
/// send, which then sees only a connection that closed. Here the handshake
/// is followed by a read of at most `wait`, which returns that alert.
pub async fn diagnose(
    addr: &str,
    host: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
    wait: std::time::Duration,
) -> Option<TlsProblem> {
    use tokio::io::AsyncReadExt;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let tcp = tokio::time::timeout(wait, tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = match tokio::time::timeout(wait, connector.connect(name, tcp)).await.ok()? {
        Ok(tls) => tls,
        Err(error) => return TlsProblem::find(&error),
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(wait, tls.read(&mut byte)).await {
        Ok(Err(error)) => TlsProblem::find(&error),
        // Data, a clean close, or silence: the handshake was accepted.
        _ => None,
    }
}
