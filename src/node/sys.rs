//! The system calls glommio 0.9 does not offer, each behind a safe function: sockets it
//! cannot configure itself (made with socket2 and handed over), and the seeder's
//! zero-copy send path (`sendfile(2)`, gather `sendmsg(2)` with `MSG_MORE`, `O_NONBLOCK`,
//! `posix_fadvise`).
//!
//! glommio's `TcpListener::bind` sets SO_REUSEPORT but not SO_REUSEADDR, so a seeder that
//! restarts while its old connections sit in TIME_WAIT could not bind its port for a minute.
//! Building the socket here fixes that (its safe `From<socket2::Socket>` takes an older
//! socket2, hence `from_raw_fd`).
//!
//! The send functions never wait: they report a full send buffer as [`Sent::Full`], and
//! the caller waits for room the glommio way (a write through the `TcpStream`, whose
//! `POLLOUT` wait is an io_uring `POLL_ADD` with the stream's write timeout).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

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
                s.as_raw_fd(),
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

/// What one non-blocking send attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// This many bytes were queued on the socket (for [`sendfile`], 0 means the file ended
    /// before `offset`: it shrank).
    Bytes(usize),
    /// The socket's send buffer is full (EAGAIN): wait for `POLLOUT`, then try again.
    Full,
}

fn sent(rc: isize) -> io::Result<Sent> {
    if rc >= 0 {
        return Ok(Sent::Bytes(rc as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(Sent::Full),
        // A signal before anything was sent: nothing was queued; waiting for POLLOUT and
        // trying again is right (it returns at once when there is room).
        io::ErrorKind::Interrupted => Ok(Sent::Full),
        _ => Err(e),
    }
}

/// Keeps chunk-sized buffers in the allocator's arenas between uses (glibc only; elsewhere
/// nothing). Every received chunk arrives in a fresh buffer of its size (up to
/// `CHUNK_SIZE_MAX_BYTES`, 16 MiB), which the background write frees on the same shard. With
/// glibc's defaults those buffers were mmapped or trimmed off the top of the heap when
/// freed, so the next one faulted in fresh zeroed pages: 80–90k page faults per 512 MiB
/// downloaded, against 1.6k with this (tuning.md, "Allocator tuning"). So: every
/// allocation below `ALLOCATOR_MMAP_THRESHOLD_BYTES` comes from an arena, and an arena gives
/// back the free space at its top only beyond `ALLOCATOR_TRIM_THRESHOLD_BYTES`. This
/// retains at most that much free memory per arena after a peak; it never raises the peak.
/// Idempotent; called by `Node::start`.
pub(super) fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    {
        use crate::config::{ALLOCATOR_MMAP_THRESHOLD_BYTES, ALLOCATOR_TRIM_THRESHOLD_BYTES};
        // SAFETY: mallopt only sets glibc's malloc parameters, under glibc's own lock; it
        // touches no memory of ours. A refused value (0 returned) leaves the default.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, ALLOCATOR_MMAP_THRESHOLD_BYTES as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, ALLOCATOR_TRIM_THRESHOLD_BYTES as libc::c_int);
        }
    }
}

/// Puts a connected socket in non-blocking mode (`O_NONBLOCK`), so that [`sendfile`], which
/// has no `MSG_DONTWAIT`, returns EAGAIN instead of blocking the shard when the send buffer
/// is full. glommio is unaffected: its reads and writes pass `MSG_DONTWAIT` anyway and wait
/// for readiness through io_uring `POLL_ADD`.
pub(super) fn set_nonblocking(sock: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: `sock` is an open descriptor for the duration of the calls (we borrow its
    // owner);
    // F_GETFL/F_SETFL take and return plain integers.
    let rc = unsafe {
        let flags = libc::fcntl(sock.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            flags
        } else if flags & libc::O_NONBLOCK != 0 {
            0
        } else {
            libc::fcntl(sock.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `sendmsg(2)` of `bufs` in order (a gather write: a chunk's header record and its
/// payload in one system call) with `MSG_DONTWAIT | MSG_NOSIGNAL`, plus `MSG_MORE` if
/// `more` (more bytes of the same chunk follow at once: the kernel may hold a partial
/// segment for them). Queues a prefix of the bytes, possibly none.
pub(super) fn send_vectored(sock: &impl AsRawFd, bufs: &[&[u8]], more: bool) -> io::Result<Sent> {
    let iov: Vec<libc::iovec> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() })
        .collect();
    if iov.is_empty() {
        return Ok(Sent::Bytes(0));
    }
    // SAFETY: an all-zero msghdr is a valid empty message (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    let mut flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    if more {
        flags |= libc::MSG_MORE;
    }
    // SAFETY: `msg` points at `iov`, which lives on this frame for the call, and every iovec
    // describes a live slice the kernel only reads (`bufs` is borrowed for the call);
    // `sock` is an open descriptor for the call (we borrow its owner).
    let rc = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
    sent(rc)
}

/// One `sendfile(2)` of up to `count` bytes of `file` from `offset` to the socket `sock`:
/// the kernel attaches the file's page-cache pages to the socket instead of copying them
/// into user space and back. `sock` must be non-blocking ([`set_nonblocking`]), else a full
/// send buffer blocks the thread. `Sent::Bytes(0)` with `count > 0`: the file ends at or
/// before `offset` (it was truncated). A short count is a full socket buffer or a file that
/// ends inside the range: the caller asks again from where it stopped.
pub(super) fn sendfile(
    sock: &impl AsRawFd,
    file: &std::fs::File,
    offset: u64,
    count: usize,
) -> io::Result<Sent> {
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past off_t"))?;
    // SAFETY: both descriptors are open for the call (we borrow their owners);
    // `off` is a local the kernel reads and updates; no user memory is read or written.
    let rc = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
    sent(rc)
}

/// Tells the kernel that `file` will be read sequentially, once per open file (not per
/// chunk): it doubles the readahead window, so a `sendfile` from a cold file finds the next
/// pages already on their way. A hint: failure changes nothing but speed.
pub(super) fn advise_sequential(file: &std::fs::File) {
    // SAFETY: `file` is open for the call; posix_fadvise reads no user memory.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}
