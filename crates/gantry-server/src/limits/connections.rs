//! Connections per client address, counted at accept: [`Admitting`] is
//! the listener every event loop serves from (plain HTTP directly, HTTPS
//! through a `TlsListener` over it, so a refused connection costs no
//! handshake). A connection over the limit is closed at once, before a
//! byte is read: the server keeps serving everyone else, and a client
//! that opens connections in a loop gets nothing for them.
//!
//! Every request of an admitted connection carries `ConnectInfo<Connection>`:
//! the certificate its TLS handshake verified, and what its client's
//! address holds (for requests without a token).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use gantry_tls::listener::{PeerCertificate, TlsListener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::{ConnectionSlot, Held, Usage};

/// A TCP listener that refuses connections from an address with as many
/// open as [`super::Limits::connections_per_ip`] allows.
#[derive(Debug)]
pub struct Admitting {
    listener: TcpListener,
    usage: Arc<Usage>,
}

impl Admitting {
    pub fn new(listener: TcpListener, usage: Arc<Usage>) -> Admitting {
        Admitting { listener, usage }
    }
}

impl Listener for Admitting {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let (tcp, remote) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors or the like: give connections a
                // moment to close. (A connection reset before it was taken
                // is the client's business.)
                Err(e) if is_connection_error(&e) => continue,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Dropped, that is closed, when its address has too many.
            let Some(slot) = self.usage.admit_connection(remote.ip()) else { continue };
            // No Nagle: a watch writes each event as it happens, and a
            // small write behind an unacknowledged one would wait for the
            // peer's delayed ACK (40 ms on Linux); measured as 50 ms stalls
            // in HTTP/2 fan-out.
            let _ = tcp.set_nodelay(true);
            return (Counted { tcp, slot }, remote);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// An admitted TCP connection: it counts for its address until it closes.
#[derive(Debug)]
pub struct Counted {
    tcp: TcpStream,
    slot: ConnectionSlot,
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// One client connection, as every request of it sees it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The certificate the client presented and the TLS handshake
    /// verified; `None` over plain HTTP or without one.
    pub certificate: Option<PeerCertificate>,
    /// What the client's address holds.
    pub held: Arc<Held>,
}

impl Connected<IncomingStream<'_, Admitting>> for Connection {
    fn connect_info(stream: IncomingStream<'_, Admitting>) -> Connection {
        Connection { certificate: None, held: Arc::clone(stream.io().slot.held()) }
    }
}

impl Connected<IncomingStream<'_, TlsListener<Counted>>> for Connection {
    fn connect_info(stream: IncomingStream<'_, TlsListener<Counted>>) -> Connection {
        Connection {
            certificate: stream.remote_addr().certificate.clone(),
            held: Arc::clone(stream.io().get_ref().0.slot.held()),
        }
    }
}
