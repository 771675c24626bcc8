//! The CA's certificates, read back with x509-parser: signed by the CA,
//! with the role, names, addresses and validity asked for; keys written
//! private; the identities rustls gets from them, and handshake problems
//! found under the errors that wrap them.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use super::*;

fn parse(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
}

#[test]
fn a_ca_signs_certificates_that_carry_their_role_and_names() {
    let ca = Ca::create("test", CA_VALIDITY).unwrap();
    let ca_der = parse(ca.cert_pem());
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca_cert.is_ca());

    let mut request = CertRequest::new(Role::Agent, "web-1");
    request.ips = vec!["10.0.0.5".parse().unwrap()];
    request.dns = vec!["web-1.example".into()];
    let issued = ca.issue(&request).unwrap();
    let der = parse(&issued.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).expect("signed by the CA");
    assert!(!cert.is_ca());

    let holder = holder_of_der(&der).unwrap();
    assert_eq!(holder.name, "web-1");
    assert_eq!(holder.role, Some(Role::Agent));
    assert_eq!(holder.dns, ["agent.gantry", "web-1.example"]);
    assert_eq!(holder.ips, ["10.0.0.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(holder_of_pem(&issued.cert_pem).unwrap(), holder);
}

#[test]
fn a_server_certificate_answers_on_localhost_and_a_client_one_cannot_serve() {
    let ca = Ca::create("test", CA_VALIDITY).unwrap();
    let server = ca.issue(&CertRequest::new(Role::Server, "server-1")).unwrap();
    let holder = holder_of_pem(&server.cert_pem).unwrap();
    assert_eq!(holder.role, Some(Role::Server));
    assert!(holder.dns.contains(&"localhost".to_owned()), "{holder:?}");
    assert!(holder.ips.contains(&IpAddr::from([127, 0, 0, 1])), "{holder:?}");

    let client = ca.issue(&CertRequest::new(Role::Client, "alice")).unwrap();
    let der = parse(&client.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let usage = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.client_auth && !usage.server_auth, "{usage:?}");
}

#[test]
fn a_ca_read_back_from_its_files_signs_as_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create("test", CA_VALIDITY).unwrap();
    write_public(&dir.path().join(CA_FILE), ca.cert_pem().as_bytes()).unwrap();
    write_private(&dir.path().join(CA_KEY_FILE), ca.key_pem().as_bytes()).unwrap();
    let mode = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(CA_KEY_FILE), 0o600);
    assert_eq!(mode(CA_FILE), 0o644);

    let loaded = Ca::load(dir.path()).unwrap();
    let issued = loaded.issue(&CertRequest::new(Role::Client, "bob")).unwrap();
    let ca_der = parse(ca.cert_pem());
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let der = parse(&issued.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).expect("signed by the loaded CA");
}

#[test]
fn another_cas_certificate_does_not_verify() {
    let ours = Ca::create("ours", CA_VALIDITY).unwrap();
    let theirs = Ca::create("theirs", CA_VALIDITY).unwrap();
    let issued = theirs.issue(&CertRequest::new(Role::Client, "mallory")).unwrap();
    let ours_der = parse(ours.cert_pem());
    let (_, ours_cert) = x509_parser::parse_x509_certificate(&ours_der).unwrap();
    let der = parse(&issued.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(cert.verify_signature(Some(ours_cert.public_key())).is_err());
}

#[test]
fn a_trusted_ca_verifies_what_it_signed_for_as_long_as_it_is_valid() {
    let ours = Ca::create("ours", CA_VALIDITY).unwrap();
    let trusted = config::TrustedCa::from_pem(ours.cert_pem(), "ca.pem").unwrap();
    let now = SystemTime::now();
    for role in [Role::Server, Role::Agent, Role::Client] {
        let issued = ours.issue(&CertRequest::new(role, "n1")).unwrap();
        let holder = trusted.verify(&issued.cert_pem, "n1.pem", now).unwrap();
        assert_eq!((holder.role, holder.name.as_str()), (Some(role), "n1"));
    }
    // Valid for a day: not any more in two.
    let mut short = CertRequest::new(Role::Agent, "n2");
    short.valid_for = Duration::from_secs(24 * 3600);
    let issued = ours.issue(&short).unwrap();
    trusted.verify(&issued.cert_pem, "n2.pem", now).unwrap();
    let later = trusted.verify(&issued.cert_pem, "n2.pem", now + Duration::from_secs(2 * 24 * 3600));
    assert!(later.unwrap_err().to_string().contains("n2.pem"));
    // Another CA's.
    let theirs = Ca::create("theirs", CA_VALIDITY).unwrap().issue(&CertRequest::new(Role::Agent, "n1")).unwrap();
    assert!(trusted.verify(&theirs.cert_pem, "theirs.pem", now).is_err());
    assert!(trusted.verify("not a certificate", "junk.pem", now).is_err());
}

#[test]
fn private_keys_never_show_in_debug_output() {
    let ca = Ca::create("test", CA_VALIDITY).unwrap();
    let issued = ca.issue(&CertRequest::new(Role::Client, "alice")).unwrap();
    for text in [format!("{ca:?}"), format!("{issued:?}")] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(text.contains("(private)"));
    }
}

#[test]
fn an_invalid_dns_name_is_an_error_not_a_certificate() {
    let ca = Ca::create("test", CA_VALIDITY).unwrap();
    for bad in ["not a name", "a..b", "-a.example", "x\u{0}", ""] {
        let mut request = CertRequest::new(Role::Server, "s");
        request.dns = vec![bad.into()];
        let err = ca.issue(&request).unwrap_err();
        assert!(err.to_string().contains("is not a DNS name"), "{bad:?}: {err}");
    }
    let mut request = CertRequest::new(Role::Server, "s");
    request.dns = vec!["*.api.example.com".into(), "gantry-1".into()];
    ca.issue(&request).unwrap();
}

#[test]
fn a_certificate_can_start_in_the_past_and_so_have_expired() {
    let ca = Ca::create("test", CA_VALIDITY).unwrap();
    let mut request = CertRequest::new(Role::Client, "late");
    request.not_before = Some(SystemTime::now() - Duration::from_secs(2 * 24 * 3600));
    request.valid_for = Duration::from_secs(24 * 3600);
    let issued = ca.issue(&request).unwrap();
    let der = parse(&issued.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let now = x509_parser::time::ASN1Time::now();
    assert!(cert.validity().not_after < now, "{:?}", cert.validity());
    assert!(!cert.validity().is_valid());
}

#[test]
fn an_identity_needs_its_own_key() {
    let ca = Ca::create("test", CA_VALIDITY).unwrap();
    let one = ca.issue(&CertRequest::new(Role::Server, "one")).unwrap();
    let other = ca.issue(&CertRequest::new(Role::Server, "other")).unwrap();
    let err = config::Identity::from_pem(&one.cert_pem, &one.cert_pem, "one.pem").unwrap_err();
    assert!(err.to_string().contains("holds no private key"), "{err}");
    let err = config::Identity::from_pem(&one.key_pem, &one.key_pem, "one.pem").unwrap_err();
    assert!(err.to_string().contains("one.pem is not a PEM certificate"), "{err}");
    let mismatched = config::Identity::from_pem(&one.cert_pem, &other.key_pem, "one.pem").unwrap();
    let err = config::server_config(&mismatched, &config::ClientAuth::Off).unwrap_err();
    assert!(err.to_string().contains("the certificate of one"), "{err}");
    let identity = config::Identity::from_pem(&one.cert_pem, &one.key_pem, "one.pem").unwrap();
    assert_eq!(identity.holder().role, Some(Role::Server));
    assert!(!format!("{identity:?}").contains("PRIVATE KEY"));
    config::server_config(&identity, &config::ClientAuth::Off).unwrap();
}

/// tokio-rustls wraps rustls's error in an io::Error, and hyper's
/// connector sometimes in a second one, whose `source()` skips it.
#[test]
fn a_handshake_problem_is_found_under_the_errors_that_wrap_it() {
    let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    let wrapped = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, rustls));
    assert_eq!(problem::TlsProblem::find(&wrapped), Some(problem::TlsProblem::UnknownIssuer));
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
    assert_eq!(problem::TlsProblem::find(&alert), Some(problem::TlsProblem::CertificateRequired));
    assert_eq!(problem::TlsProblem::find(&std::io::Error::other("refused")), None);
}
