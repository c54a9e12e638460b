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

use crate::config::{
    DHT_RECV_BUFFER_BYTES, LISTEN_BACKLOG_CONNECTIONS, WEBRTC_SOCKET_BUFFER_BYTES,
};

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

/// A WebRTC UDP socket on `addr` with `WEBRTC_SOCKET_BUFFER_BYTES` of send and receive
/// buffer. A seeder shard's (`reuse_port`: every shard binds the same address and the
/// kernel spreads peers over them by their 4-tuple, so a peer's offer and all its later
/// datagrams reach one shard); a downloader's is bound to an ephemeral port and connected to
/// `peer` (so it names a concrete local address, and hears only that peer). Must be called
/// on a glommio executor.
///
/// First slice: one datagram per syscall. UDP GSO/GRO (DESIGN.md, 440–550 MB/s) is to come
/// here, next to the other socket code.
pub(super) fn webrtc_socket(
    addr: SocketAddr,
    reuse_port: bool,
    peer: Option<SocketAddr>,
) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    force_buffers(&s, WEBRTC_SOCKET_BUFFER_BYTES);
    s.bind(&addr.into())?;
    if let Some(peer) = peer {
        s.connect(&peer.into())?;
    }
    let fd = s.into_raw_fd();
    // SAFETY: `fd` is a freshly created and bound UDP socket that we own (moved out of `s`
    // above); glommio takes ownership of it.
    Ok(unsafe { UdpSocket::from_raw_fd(fd) })
}

/// Sets both socket buffers to `bytes`: with SO_SNDBUFFORCE/SO_RCVBUFFORCE when the process
/// may (CAP_NET_ADMIN: root here), past net.core.wmem_max/rmem_max; else the capped hint.
fn force_buffers(s: &Socket, bytes: usize) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [(libc::SO_SNDBUFFORCE, false), (libc::SO_RCVBUFFORCE, true)] {
        // SAFETY: `s` is an open socket for the duration of the call; the option value is a
        // c_int that lives on the stack for the call and its length is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(s),
                libc::SOL_SOCKET,
                force,
                std::ptr::addr_of!(v).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // Not permitted: the kernel caps the plain options at its maximum.
            let _ =
                if plain { s.set_recv_buffer_size(bytes) } else { s.set_send_buffer_size(bytes) };
        }
    }
}
