//! The request's `Peer` as the serving path makes it: over TLS, the
//! holder of the certificate the handshake verified; otherwise anonymous.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use gantry_tls::config::{ClientAuth, ClientTls, Identity, TrustedCa, server_config};
use gantry_tls::{CA_VALIDITY, Ca, CertRequest, Role};

use crate::access::Peer;

async fn whoami(peer: Peer) -> String {
    match peer.0 {
        None => "anonymous".into(),
        Some(certificate) => {
            let holder = certificate.holder();
            format!("{} ({})", holder.name, holder.role.map_or("no role", Role::as_str))
        }
    }
}

/// Serves a route answering who the caller is, with `tls` or without; its URL.
async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/whoami", listener.local_addr().unwrap());
    let router = Router::new().route("/whoami", get(whoami));
    let usage = Arc::new(crate::limits::Usage::new(crate::Limits::default()));
    tokio::spawn(super::serve_router(listener, router, tls, usage, std::future::pending()));
    url
}

async fn ask(url: &str, tls: rustls::ClientConfig) -> String {
    let http = reqwest::Client::builder().tls_backend_preconfigured(tls).build().unwrap();
    http.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_verified_certificate_is_the_callers_identity() {
    let ca = Ca::create("test", CA_VALIDITY).unwrap();
    let identity = |role, name| {
        let issued = ca.issue(&CertRequest::new(role, name)).unwrap();
        Identity::from_pem(&issued.cert_pem, &issued.key_pem, name).unwrap()
    };
    let trusted = TrustedCa::from_pem(ca.cert_pem(), "ca.pem").unwrap();
    let config = server_config(&identity(Role::Server, "s1"), &ClientAuth::Optional(trusted.clone())).unwrap();
    let url = serve(Some(config)).await;
    let client = |who: Option<Identity>| ClientTls { ca: trusted.clone(), identity: who }.config().unwrap();

    assert_eq!(ask(&url, client(Some(identity(Role::Client, "alice")))).await, "alice (client)");
    assert_eq!(ask(&url, client(Some(identity(Role::Agent, "web-1")))).await, "web-1 (agent)");
    assert_eq!(ask(&url, client(None)).await, "anonymous");
    let plain = serve(None).await;
    assert_eq!(ask(&plain, gantry_tls::config::trust_nothing()).await, "anonymous");
}
