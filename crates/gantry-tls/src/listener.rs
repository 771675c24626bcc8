//! axum served over TLS: [`TlsListener`] accepts TCP connections, does
//! their handshakes, and hands axum the finished TLS streams, each with
//! its [`TlsPeer`]: the client's address and the holder of the certificate
//! it presented (verified by the handshake), which every request of the
//! connection carries as `ConnectInfo<TlsPeer>` when served with
//! `Router::into_make_service_with_connect_info::<TlsPeer>()`.
//!
//! Why handshakes run in tasks of their own rather than in `accept`: axum
//! accepts one connection at a time, so a client that connects and then
//! says nothing would hold up every other client for the handshake's
//! whole timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener, ListenerExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{Holder, holder_of_der};

/// How long a client has to finish its handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections not yet taken by axum; beyond, handshakes wait.
const READY_CONNECTIONS: usize = 128;

/// The verified certificate a client presented: who it is, in which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate(Arc<Holder>);

impl PeerCertificate {
    pub fn new(holder: Holder) -> PeerCertificate {
        PeerCertificate(Arc::new(holder))
    }

    pub fn holder(&self) -> &Holder {
        &self.0
    }
}

/// One TLS connection's client.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub remote: SocketAddr,
    /// `None` when the client presented no certificate (the server let it
    /// in without one).
    pub certificate: Option<PeerCertificate>,
}

impl<Io> Connected<IncomingStream<'_, TlsListener<Io>>> for TlsPeer
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn connect_info(stream: IncomingStream<'_, TlsListener<Io>>) -> TlsPeer {
        stream.remote_addr().clone()
    }
}

/// A listener whose connections axum gets after their TLS handshake: TCP
/// connections (`Io` is `TcpStream`), or those of another listener that
/// chose them first (one that refuses some before any handshake is
/// spent on them). Its accepting task runs on the runtime it was made on,
/// and ends when it is dropped.
#[derive(Debug)]
pub struct TlsListener<Io = TcpStream> {
    ready: mpsc::Receiver<(TlsStream<Io>, TlsPeer)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves `config` on `listener`, from the current tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        // No Nagle, as on plain HTTP: a watch writes each event as it happens.
        TlsListener::over(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            config,
        )
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsListener<Io> {
    /// Serves `config` on the connections `listener` accepts, from the
    /// current tokio runtime.
    pub fn over<L>(listener: L, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener<Io>>
    where
        L: Listener<Io = Io, Addr = SocketAddr>,
    {
        let local = listener.local_addr()?;
        let (handshaken, ready) = mpsc::channel(READY_CONNECTIONS);
        let accepting = tokio::spawn(accept(listener, TlsAcceptor::from(config), handshaken));
        Ok(TlsListener { ready, local, accepting })
    }
}

impl<Io> Drop for TlsListener<Io> {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static> Listener for TlsListener<Io> {
    type Io = TlsStream<Io>;
    /// The peer (a listener's own address has no certificate).
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, TlsPeer) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<TlsPeer> {
        Ok(TlsPeer { remote: self.local, certificate: None })
    }
}

async fn accept<L: Listener<Addr = SocketAddr>>(
    mut listener: L,
    acceptor: TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<L::Io>, TlsPeer)>,
) {
    loop {
        // The listener deals with its own errors (out of file descriptors:
        // it waits for connections to close).
        let (io, remote) = listener.accept().await;
        let (acceptor, handshaken) = (acceptor.clone(), handshaken.clone());
        tokio::spawn(async move {
            // A failed handshake (an unknown CA, no certificate where one
            // is required) is the client's to see: rustls told it why.
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await else { return };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|der| holder_of_der(der).ok())
                .map(PeerCertificate::new);
            let _ = handshaken.send((tls, TlsPeer { remote, certificate })).await;
        });
    }
}
