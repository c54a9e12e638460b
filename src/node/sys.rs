//! The system calls glommio 0.9 does not offer, each behind a safe function: sockets it
//! cannot configure itself (made with socket2 and handed over), the seeder's
//! zero-copy send path (`sendfile(2)`, gather `sendmsg(2)` with `MSG_MORE`, `O_NONBLOCK`,
//! `posix_fadvise`), and UDP GSO and GRO for the WebRTC sockets (`sendmsg(2)` with a
//! `UDP_SEGMENT` control message, `recvmsg(2)` with `UDP_GRO`: a run of datagrams per
//! system call instead of one).
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

use bytes::BytesMut;
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
/// The endpoint that runs it turns on UDP GRO ([`enable_gro`]) and sends runs of
/// datagrams with [`send_segments`].
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

/// Reads exactly `len` bytes of `file` from `offset` (`pread(2)`, again after a short read
/// or `EINTR`) into a fresh `BytesMut`, straight into its uninitialised capacity: no
/// zero-filling before the read, which would cost about what the copy it serves to avoid
/// does. For a chunk that leaves as owned pieces (a data channel's messages).
///
/// Errors: `UnexpectedEof` if the file ends before `offset + len` (it shrank), or the read's
/// error.
pub(super) fn pread_exact(file: &std::fs::File, offset: u64, len: usize) -> io::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let want = len - buf.len();
        let at = offset + buf.len() as u64;
        let at = libc::off_t::try_from(at).map_err(|_| io::ErrorKind::InvalidInput)?;
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is `buf`'s own spare capacity, at least `want` bytes (reserved
        // above, never shrunk), and the kernel writes at most `want` bytes into it.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, at) };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: the kernel initialised the `n` (<= `want`) bytes past the length.
            n => unsafe { buf.set_len(buf.len() + n as usize) },
        }
    }
    Ok(buf)
}

/// Tells the kernel that `file` will be read sequentially, once per open file (not per
/// chunk): it doubles the readahead window, so a `sendfile` from a cold file finds the next
/// pages already on their way. A hint: failure changes nothing but speed.
pub(super) fn advise_sequential(file: &std::fs::File) {
    // SAFETY: `file` is open for the call; posix_fadvise reads no user memory.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

/// Largest UDP payload one GSO send or one GRO receive carries, in bytes: an IPv4
/// datagram's 65,535 bytes less its 20-byte IP and 8-byte UDP headers.
pub(super) const UDP_BATCH_MAX_BYTES: usize = 65_507;
/// Most datagrams one GSO send carries: the kernel's `UDP_MAX_SEGMENTS` (64 since Linux
/// 4.18; later kernels allow more, never fewer).
pub(super) const UDP_SEGMENTS_MAX: usize = 64;

/// Turns on UDP generic receive offload (`UDP_GRO`, Linux 5.0) on `sock`: the kernel may
/// then hand over several datagrams of one source and one size, back to back, in one
/// receive ([`recv_segments`] splits them). Returns whether the kernel took the option;
/// without it every receive is one datagram, which [`recv_segments`] handles alike.
pub(super) fn enable_gro(sock: &impl AsRawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: `sock` is an open descriptor for the call (we borrow its owner); the option
    // value is a c_int on the stack for the call and its length is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            std::ptr::addr_of!(on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// One non-blocking `sendmsg(2)` of `buf` to `to` (`MSG_DONTWAIT | MSG_NOSIGNAL`). When
/// `buf` is longer than `segment` it goes with a `UDP_SEGMENT` control message (UDP GSO,
/// Linux 4.18): the kernel cuts it into datagrams of `segment` bytes, the last one possibly
/// shorter, at the cost of one system call and one trip down the stack. `Sent::Full`:
/// nothing was sent (the send buffer is full). Errors: `InvalidInput` for a batch the
/// kernel would refuse (empty, `segment` 0 or above 65,535, more than `UDP_BATCH_MAX_BYTES`
/// or `UDP_SEGMENTS_MAX` segments); from the kernel, `EIO` (the route's device cannot
/// checksum a segmented datagram) and `EINVAL` (a segment larger than the route's MTU)
/// mean GSO cannot be used toward `to`: send the datagrams one by one instead.
pub(super) fn send_segments(
    sock: &impl AsRawFd,
    to: SocketAddr,
    buf: &[u8],
    segment: usize,
) -> io::Result<Sent> {
    send_gather(sock, to, &[io::IoSlice::new(buf)], segment)
}

/// [`send_segments`] of the bytes of `bufs` one after the other, gathered by the kernel
/// (`sendmsg(2)`'s iovec: nothing is copied into one buffer first). Where the pieces end
/// does not matter, only `segment` cuts datagrams; at most `UDP_SEGMENTS_MAX` pieces.
pub(super) fn send_gather(
    sock: &impl AsRawFd,
    to: SocketAddr,
    bufs: &[io::IoSlice<'_>],
    segment: usize,
) -> io::Result<Sent> {
    let len: usize = bufs.iter().map(|b| b.len()).sum();
    let segments = len.div_ceil(segment.max(1));
    let gso = u16::try_from(segment).ok().filter(|s| *s > 0);
    if len == 0
        || gso.is_none()
        || len > UDP_BATCH_MAX_BYTES
        || segments > UDP_SEGMENTS_MAX
        || bufs.len() > UDP_SEGMENTS_MAX
    {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a valid UDP GSO batch"));
    }
    let addr = socket2::SockAddr::from(to);
    // Room for one cmsghdr and a u16, aligned as a cmsghdr must be.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is a valid empty message (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len();
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std documents it), so the slices
    // are the iovec array; the kernel only reads them and the bytes they point at.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len() as _;
    if segments > 1 {
        let gso = gso.unwrap_or_default();
        // SAFETY: CMSG_SPACE is arithmetic. `control` is 32 bytes, 8-aligned, and
        // CMSG_SPACE(2) is 24 on Linux, so CMSG_FIRSTHDR returns a non-null pointer to a
        // cmsghdr inside it, and CMSG_DATA points 16 bytes in, with room for the u16,
        // written unaligned. `control` outlives the sendmsg below.
        unsafe {
            let space = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
            debug_assert!(space <= size_of_val(&control));
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), gso);
        }
    }
    // SAFETY: `msg` points at `addr` (a valid sockaddr of `addr.len()` bytes), at `bufs`
    // (`bufs.len()` iovecs, each describing bytes borrowed for the call, which the kernel
    // only reads) and, with segments, at `control` (a well-formed cmsg, above); all live
    // for the call. `sock` is an open descriptor for the call (we borrow its owner).
    let rc =
        unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    match sent(rc)? {
        // A datagram is sent whole or not at all.
        Sent::Bytes(_) => Ok(Sent::Bytes(len)),
        Sent::Full => Ok(Sent::Full),
    }
}

/// Whether `e`, from [`send_segments`] with several segments, says UDP GSO cannot be used on
/// this socket's route (`EIO`: no checksum offload on its device; `EINVAL`: a segment above
/// its MTU, or the kernel's other limits), as opposed to the socket's own errors.
pub(super) fn gso_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL))
}

/// What one [`recv_segments`] took: `len` bytes from `from`, datagrams of `segment` bytes
/// back to back (the last one possibly shorter; `segment == len` for a single datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    /// Bytes written to the buffer, whole datagrams only.
    pub(super) len: usize,
    /// The datagrams' source.
    pub(super) from: SocketAddr,
    /// Bytes per datagram, at least 1 and at most `len` (when `len > 0`).
    pub(super) segment: usize,
}

impl Received {
    /// Takes the next datagram off the front of `buf` (the buffer [`recv_segments`]
    /// filled) as a piece of it, without a copy; `None` once `buf` is empty.
    pub(super) fn take_datagram(&self, buf: &mut BytesMut) -> Option<BytesMut> {
        (!buf.is_empty()).then(|| buf.split_to(self.segment.clamp(1, buf.len())))
    }
}

/// One non-blocking `recvmsg(2)` (`MSG_DONTWAIT`) into `buf`, which it empties first and
/// gives room for `cap` bytes (reusing its allocation when nothing else holds it): one
/// datagram, or with [`enable_gro`] several of one source and size coalesced by the kernel
/// (their size in a `UDP_GRO` control message). The bytes received are written straight
/// into `buf`'s spare capacity, so the caller can hand each datagram on as a piece of `buf`
/// (`BytesMut::split_to`) without copying it. `Ok(None)`: nothing queued (`buf` empty).
/// `cap` should be `UDP_BATCH_MAX_BYTES`; what does not fit is cut off at a datagram
/// boundary (a cut datagram is dropped, as UDP drops what a buffer cannot hold). Errors are
/// the socket's (say, `ConnectionRefused` from an ICMP error on a connected socket): per
/// call, the next call goes on; a source that is not an IP address is `InvalidData`.
pub(super) fn recv_segments(
    sock: &impl AsRawFd,
    buf: &mut BytesMut,
    cap: usize,
) -> io::Result<Option<Received>> {
    buf.clear();
    buf.reserve(cap);
    let spare = buf.spare_capacity_mut();
    let room = spare.len().min(cap);
    let mut iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: room };
    // Room for a few control messages (UDP_GRO's is one cmsghdr and a c_int), 8-aligned.
    let mut control = [0u64; 8];
    let mut flags = 0;
    // SAFETY: `try_init` hands us a zeroed sockaddr storage and its length, valid for the
    // call; `msg` points at them, at `iov` (describing the first `room` bytes of `buf`'s
    // spare capacity, borrowed mutably for the call: the kernel writes at most `iov_len`
    // bytes into it, uninitialised memory being fine to write) and at `control` (64 bytes on
    // this frame, its length passed). `sock` is an open descriptor for the call. The kernel
    // sets the address length it wrote, which `try_init` keeps.
    let res = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = std::ptr::addr_of_mut!(iov);
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control) as _;
            let rc = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            flags = msg.msg_flags;
            Ok((rc as usize, gro_segment(&msg)))
        })
    };
    let ((n, segment), addr) = match res {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    let from = addr.as_socket().ok_or(io::ErrorKind::InvalidData)?;
    // With MSG_TRUNC, recvmsg returns the datagram's full length, not what it wrote.
    let n = n.min(room);
    // SAFETY: the kernel wrote `n` bytes (at most `room`, clamped above) at the start of
    // the spare capacity, so the first `n` bytes past the (empty) length are initialised.
    unsafe { buf.set_len(n) };
    let segment = segment.filter(|s| (1..=n).contains(s)).unwrap_or(n.max(1));
    // Cut short (MSG_TRUNC): keep the whole datagrams only.
    let len = if flags & libc::MSG_TRUNC != 0 { n - n % segment } else { n };
    buf.truncate(len);
    Ok(Some(Received { len, from, segment }))
}

/// The segment size of a `UDP_GRO` control message in `msg`, if it has one.
///
/// # Safety
///
/// `msg` must have been filled by a successful `recvmsg(2)`: its control pointer and length
/// describe a live buffer the kernel wrote well-formed cmsgs into.
unsafe fn gro_segment(msg: &libc::msghdr) -> Option<usize> {
    // SAFETY: per the contract, CMSG_FIRSTHDR/CMSG_NXTHDR walk the kernel-written cmsgs
    // inside the control buffer (they return null past its end); CMSG_DATA of a UDP_GRO
    // cmsg holds a c_int (the kernel's put_cmsg of an int), read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP
                && (*cmsg).cmsg_type == libc::UDP_GRO
                && (*cmsg).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(v).ok();
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pread_exact_reads_the_range_and_refuses_a_file_that_ends_inside_it() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        io::Write::write_all(&mut f, &data).unwrap();
        let got = pread_exact(&f, 1_000, 200_000).unwrap();
        assert_eq!(&got[..], &data[1_000..201_000]);
        assert_eq!(&pread_exact(&f, 299_999, 1).unwrap()[..], &data[299_999..]);
        assert!(pread_exact(&f, 0, 0).unwrap().is_empty());
        let past = pread_exact(&f, 250_000, 60_000).unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_gso_batch_arrives_as_its_datagrams_with_and_without_gro() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = tx.local_addr().unwrap();
        let batch: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
        let want: Vec<Vec<u8>> = batch.chunks(1000).map(<[u8]>::to_vec).collect();
        for gro in [true, false] {
            let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            if gro {
                assert!(enable_gro(&rx), "UDP_GRO refused");
            }
            let sent = send_segments(&tx, rx.local_addr().unwrap(), &batch, 1000).unwrap();
            assert_eq!(sent, Sent::Bytes(3500));
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut receives = 0;
            while got.len() < want.len() {
                rx.peek_from(&mut [0u8; 1]).unwrap();
                let Some(r) = recv_segments(&rx, &mut buf, UDP_BATCH_MAX_BYTES).unwrap() else {
                    continue;
                };
                receives += 1;
                assert_eq!(r.from, from);
                while let Some(d) = r.take_datagram(&mut buf) {
                    got.push(d.to_vec());
                }
            }
            assert_eq!(got, want, "gro {gro}");
            // Without GRO the kernel cut the batch into its four datagrams before the socket.
            if !gro {
                assert_eq!(receives, 4);
            }
            assert_eq!(recv_segments(&rx, &mut buf, UDP_BATCH_MAX_BYTES).unwrap(), None);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn gathered_pieces_are_cut_by_the_segment_size_not_where_they_end() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bytes: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        // Pieces of 1000, 700, 300 and 500 bytes: datagrams of 1000, 1000 and 500.
        let (a, rest) = bytes.split_at(1000);
        let (b, rest) = rest.split_at(700);
        let (c, d) = rest.split_at(300);
        let pieces = [a, b, c, d].map(io::IoSlice::new);
        let sent = send_gather(&tx, rx.local_addr().unwrap(), &pieces, 1000).unwrap();
        assert_eq!(sent, Sent::Bytes(2500));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2000];
        while got.len() < 3 {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        let want: Vec<Vec<u8>> = bytes.chunks(1000).map(<[u8]>::to_vec).collect();
        assert_eq!(got, want);
        // More pieces than segments allowed: refused.
        let many = vec![io::IoSlice::new(&[1u8]); UDP_SEGMENTS_MAX + 1];
        let e = send_gather(&tx, rx.local_addr().unwrap(), &many, 1000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_batch_the_kernel_would_refuse_is_refused_here() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let invalid = |buf: &[u8], seg| {
            send_segments(&tx, to, buf, seg).unwrap_err().kind() == io::ErrorKind::InvalidInput
        };
        assert!(invalid(&[], 100));
        assert!(invalid(&[0; 10], 0));
        assert!(invalid(&[0; 70_000], 65_536));
        assert!(invalid(&vec![0; UDP_BATCH_MAX_BYTES + 1], 1200));
        assert!(invalid(&vec![0; UDP_SEGMENTS_MAX * 100 + 1], 100));
        assert!(!gso_refused(&io::Error::from(io::ErrorKind::InvalidInput)));
        assert!(gso_refused(&io::Error::from_raw_os_error(libc::EIO)));
    }

    #[test]
    fn a_datagram_cut_short_by_the_buffer_is_dropped_whole() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(enable_gro(&rx));
        let batch = vec![7u8; 3000];
        send_segments(&tx, rx.local_addr().unwrap(), &batch, 1000).unwrap();
        // Room for two and a half datagrams: two whole ones come out, the cut one does not.
        let mut buf = BytesMut::new();
        rx.peek_from(&mut [0u8; 1]).unwrap();
        let r = recv_segments(&rx, &mut buf, 2500).unwrap().unwrap();
        assert_eq!(buf.len(), r.len);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| r.take_datagram(&mut buf)).map(|d| d.len()).collect();
        assert!(sizes.iter().all(|n| *n == 1000), "{sizes:?}");
    }
}
