//! `tls:ca:create` and `tls:cert:create`: the built-in certificate
//! authority's files (gantry-tls does the cryptography). Private keys are
//! written 0600 from their creation; nothing is ever overwritten, so a
//! certificate already handed out is not replaced by mistake.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use gantry_tls::{CA_FILE, CA_KEY_FILE, Ca, CertRequest, TlsError};
use serde::Serialize;

use crate::BadInput;
use crate::context::Context;

/// What a `tls:*` command wrote.
#[derive(Debug, Serialize)]
struct Written {
    certificate: PathBuf,
    /// Mode 0600.
    key: PathBuf,
    role: &'static str,
    name: String,
    dns: Vec<String>,
    ips: Vec<std::net::IpAddr>,
}

pub fn ca_create(ctx: &Context, dir: &Path, name: &str, valid_for: Duration) -> anyhow::Result<()> {
    let (cert, key) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
    refuse_existing(&[&cert, &key], "a CA", "every certificate it signed stops being trusted with it")?;
    create_dir(dir)?;
    let ca = Ca::create(name, valid_for).map_err(tls_error)?;
    gantry_tls::write_private(&key, ca.key_pem().as_bytes()).map_err(tls_error)?;
    gantry_tls::write_public(&cert, ca.cert_pem().as_bytes()).map_err(tls_error)?;
    let written =
        Written { certificate: cert, key, role: "ca", name: format!("Gantry CA {name}"), dns: vec![], ips: vec![] };
    ctx.output().print(&written, |out| {
        writeln!(
            out,
            "wrote {} and {} (private key, mode 0600)",
            written.certificate.display(),
            written.key.display()
        )?;
        writeln!(out, "next: gantry tls:cert:create --server NAME --dir {}", dir.display())?;
        Ok(())
    })
}

pub fn cert_create(ctx: &Context, dir: &Path, request: &CertRequest) -> anyhow::Result<()> {
    if !gantry_api::keys::is_segment(&request.name) || request.name.starts_with('.') {
        return Err(BadInput(format!(
            "error: {:?} cannot name a certificate's files\n = help: use letters, digits, `-`, `_` and `.`",
            request.name
        ))
        .into());
    }
    let ca = match Ca::load(dir) {
        Ok(ca) => ca,
        Err(TlsError::Io { path, source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(BadInput(format!(
                "error: no CA in {}: {} is missing\n = help: create one with `gantry tls:ca:create --dir {}`",
                dir.display(),
                path.display(),
                dir.display()
            ))
            .into());
        }
        Err(e) => return Err(tls_error(e)),
    };
    let (cert, key) = (dir.join(format!("{}.pem", request.name)), dir.join(format!("{}-key.pem", request.name)));
    refuse_existing(&[&cert, &key], "a certificate", "its holder may still use it")?;
    let issued = ca.issue(request).map_err(|e| match e {
        TlsError::InvalidDnsName { .. } => BadInput(format!("error: {e}")).into(),
        other => tls_error(other),
    })?;
    gantry_tls::write_private(&key, issued.key_pem.as_bytes()).map_err(tls_error)?;
    gantry_tls::write_public(&cert, issued.cert_pem.as_bytes()).map_err(tls_error)?;
    let holder = gantry_tls::holder_of_pem(&issued.cert_pem).map_err(tls_error)?;
    let written = Written {
        certificate: cert,
        key,
        role: request.role.as_str(),
        name: holder.name,
        dns: holder.dns,
        ips: holder.ips,
    };
    ctx.output().print(&written, |out| {
        writeln!(
            out,
            "wrote {} and {} (private key, mode 0600): {} certificate for {}",
            written.certificate.display(),
            written.key.display(),
            written.role,
            written.name
        )?;
        let ips: Vec<String> = written.ips.iter().map(ToString::to_string).collect();
        writeln!(out, "  names: {}", written.dns.iter().cloned().chain(ips).collect::<Vec<_>>().join(", "))?;
        Ok(())
    })
}

fn refuse_existing(paths: &[&Path], what: &str, why: &str) -> anyhow::Result<()> {
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(BadInput(format!(
            "error: {} exists: {what} is there already, and replacing it is not undone ({why})\n = help: move it away first if you mean to replace it",
            existing.display()
        ))
        .into());
    }
    Ok(())
}

pub(super) fn create_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn tls_error(e: TlsError) -> anyhow::Error {
    anyhow::Error::new(e)
}
