//! The gateway's listener: at most `GATEWAY_CONNECTIONS_MAX` connections open (more are
//! closed at accept), and a connection on which nothing moved in either direction for
//! `GATEWAY_STALL_TIMEOUT` while the server waits on it is closed. The gateway is public,
//! so an idle keep-alive connection, a client that stops reading mid-body or one that
//! trickles a request header cannot hold a slot (and a descriptor the shards share) for
//! longer than that.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// A TCP listener that keeps at most `max` connections open, each with a stall timeout.
pub(super) struct GatewayListener {
    inner: TcpListener,
    open: Arc<AtomicUsize>,
    max: usize,
    stall: Duration,
}

impl GatewayListener {
    pub(super) fn new(inner: TcpListener, max: usize, stall: Duration) -> Self {
        Self { inner, open: Arc::default(), max, stall }
    }
}

/// An accepted connection: counted until dropped; fails with `TimedOut` once a read or a
/// write has been waiting for `stall` with no byte moved either way meanwhile.
pub(super) struct Guarded {
    stream: TcpStream,
    open: Arc<AtomicUsize>,
    stall: Duration,
    /// Armed when a poll finds the socket not ready; dropped whenever bytes move. Reads
    /// and writes of one connection are polled by one task (hyper's connection future),
    /// so one timer serves both: a download in progress keeps the pending read alive.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Guarded {
    fn moved(&mut self) {
        self.deadline = None;
    }

    /// After a `Pending` from the socket: `Ready(error)` once the stall timer fired.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let stall = self.stall;
        let d = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match d.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "HTTP client stalled"))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl axum::serve::Listener for GatewayListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if self.open.load(Ordering::Relaxed) >= self.max {
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.open.fetch_add(1, Ordering::Relaxed);
                    let open = self.open.clone();
                    return (Guarded { stream, open, stall: self.stall, deadline: None }, addr);
                }
                // Out of descriptors or the like: give it a moment instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Pending => self.stalled(cx).map(Err),
            ready => {
                self.moved();
                ready
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx).map(Err),
            ready => {
                self.moved();
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx).map(Err),
            ready => {
                self.moved();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
