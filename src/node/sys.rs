//! Sockets glommio cannot configure itself, made with socket2 and handed over.
//!
//! glommio's `TcpListener::bind` sets SO_REUSEPORT but not SO_REUSEADDR, so a seeder that
//! restarts while its old connections sit in TIME_WAIT could not bind its port for a minute.
//! Building the socket here fixes that; handing the raw socket to glommio is the only
//! `unsafe` of this module (its safe `From<socket2::Socket>` takes an older socket2).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::net::{TcpListener, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{DHT_RECV_BUFFER_BYTES, LISTEN_BACKLOG_CONNECTIONS};

/// A TCP listener on `addr` with SO_REUSEADDR and SO_REUSEPORT (one per shard). Must be
/// called on a glommio executor.
pub(super) fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG_CONNECTIONS)?;
    let fd = s.into_raw_fd();
    // SAFETY: `fd` is a freshly created, bound and listening TCP socket that we own (moved
    // out of `s` above, so nothing else closes it); glommio takes ownership of it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// The DHT's UDP socket on `addr`, with a receive buffer sized for bursts.
pub(super) fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    // A hint: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(DHT_RECV_BUFFER_BYTES);
    s.bind(&addr.into())?;
    let fd = s.into_raw_fd();
    // SAFETY: `fd` is a freshly created and bound UDP socket that we own (moved out of `s`
    // above); glommio takes ownership of it.
    Ok(unsafe { UdpSocket::from_raw_fd(fd) })
}
