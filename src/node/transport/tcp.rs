//! A byte stream per connection, the handshake on it, then records through the wire's
//! framer and deframer: a glommio TCP stream (`TcpConn`), or a WebRTC data channel read
//! as a stream (`StreamConn<RtcStream>`, see `webrtc.rs`). Payload bytes are read straight into the chunk buffer the
//! deframer hands out; a plaintext payload is written from the caller's slice (a memory map
//! on the seeder: zero copy), a sealed one from the caller's buffer, sealed in place.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::RecvError;
use crate::crypto::record::TAG_BYTES;
use crate::crypto::{NodeId, RecordAad, Session};
use crate::node::secure::{
    handshake_initiator, handshake_responder, HandshakeFailure, NodeSecurity,
};
use crate::node::sys::{self, Sent};
use crate::wire::frame::{Deframed, Deframer, Framer};

/// Which end of the handshake this node runs.
#[derive(Debug, Clone)]
pub(in crate::node) enum TcpSide {
    /// We connected; the peer must prove to be `expected` if given.
    Client { expected: Option<NodeId> },
    /// We accepted. `received` counts the peer's handshake messages as each arrives
    /// whole, for a deadline that follows them (`node::seed`).
    Server { received: std::rc::Rc<std::cell::Cell<u32>> },
}

/// An established connection over a byte stream `S`.
pub(in crate::node) struct StreamConn<S> {
    stream: S,
    /// The node the handshake authenticated; `None` for a browser (no handshake).
    peer: Option<NodeId>,
    framer: Framer,
    deframer: Deframer,
    /// Control records waiting for [`TcpConn::flush`]; reused so the hot path does not
    /// allocate.
    out: Vec<u8>,
    /// Bytes read from the socket so far.
    received: u64,
    /// Whether the socket was put in `O_NONBLOCK` mode (done once, before the first
    /// `sendfile`).
    nonblocking: bool,
}

/// An established TCP connection.
pub(in crate::node) type TcpConn = StreamConn<TcpStream>;

impl<S: AsyncRead + AsyncWrite + Unpin> StreamConn<S> {
    /// Runs the handshake on `stream` (unbuffered, so no byte after it is read early) and
    /// sets up the records. Incoming control records are limited to `body_max` bytes.
    /// `binding`: the DTLS channel `stream` is (`RtcStream::channel_binding`), whose
    /// encryption then replaces the records (`crypto::handshake`, "Channel binding"); `None`
    /// on TCP.
    pub(in crate::node) async fn establish(
        mut stream: S,
        security: &NodeSecurity,
        side: TcpSide,
        body_max: u32,
        binding: Option<[u8; 32]>,
    ) -> Result<Self, HandshakeFailure> {
        let session = match side {
            TcpSide::Client { expected } => {
                handshake_initiator(&mut stream, security, expected, binding).await?
            }
            TcpSide::Server { received } => {
                handshake_responder(&mut stream, security, &received, binding).await?
            }
        };
        Ok(Self::new(stream, session, body_max))
    }

    /// A browser's connection: no handshake, plaintext records (the data channel's DTLS
    /// encrypts them; ARCHITECTURE.md, "Browser peers"). Incoming control records are
    /// limited to `body_max` bytes.
    pub(in crate::node) fn browser(stream: S, body_max: u32) -> Self {
        Self {
            stream,
            peer: None,
            framer: Framer::new(None),
            deframer: Deframer::new(None, body_max),
            out: Vec::with_capacity(4096),
            received: 0,
            nonblocking: false,
        }
    }

    fn new(stream: S, session: Session, body_max: u32) -> Self {
        let peer = Some(session.peer_id());
        let (sealer, opener) = match session.into_records() {
            Some((s, o)) => (Some(s), Some(o)),
            None => (None, None),
        };
        Self {
            stream,
            peer,
            framer: Framer::new(sealer),
            deframer: Deframer::new(opener, body_max),
            out: Vec::with_capacity(4096),
            received: 0,
            nonblocking: false,
        }
    }

    /// The underlying stream (a TCP socket's options).
    pub(in crate::node) fn stream(&self) -> &S {
        &self.stream
    }

    pub(super) fn peer_id(&self) -> Option<NodeId> {
        self.peer
    }

    pub(super) fn seals(&self) -> bool {
        self.framer.is_sealed()
    }

    pub(super) async fn recv(&mut self) -> Result<Deframed, RecvError> {
        loop {
            if let Some(d) = self.deframer.poll()? {
                return Ok(d);
            }
            let n = self.stream.read(self.deframer.read_buf()).await?;
            if n == 0 {
                return Err(if self.deframer.is_mid_record() {
                    RecvError::Truncated
                } else {
                    RecvError::Closed
                });
            }
            self.deframer.commit(n);
            self.received += n as u64;
        }
    }

    pub(super) fn body(&self) -> &[u8] {
        self.deframer.body()
    }

    pub(super) fn expect_payload(&mut self, len: u32, aad: RecordAad) {
        self.deframer.expect_payload(len, aad);
    }

    pub(super) fn push_frame(&mut self, frame: &[u8]) {
        self.framer.push_control(&mut self.out, frame);
    }

    pub(super) async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let sent = self.stream.write_all(&self.out).await;
        self.out.clear();
        sent
    }

    pub(super) fn begin_plain_chunk(&mut self, header: &[u8]) -> io::Result<()> {
        if self.seals() {
            return Err(io::Error::other("plaintext chunk on a sealed connection"));
        }
        self.push_frame(header);
        Ok(())
    }

    pub(super) fn seal_chunk(
        &mut self,
        header: &[u8],
        aad: RecordAad,
        buf: &mut [u8],
    ) -> io::Result<()> {
        if !self.seals() || buf.len() < TAG_BYTES {
            return Err(io::Error::other("sealed chunk on a plaintext connection"));
        }
        // The header's record comes first: record nonces follow the order on the wire.
        self.push_frame(header);
        let n = buf.len() - TAG_BYTES;
        let tag = self
            .framer
            .seal_payload(&aad, &mut buf[..n])
            .map_err(|e| io::Error::other(e.to_string()))?
            .ok_or_else(|| io::Error::other("sealed chunk on a plaintext connection"))?;
        buf[n..].copy_from_slice(&tag);
        Ok(())
    }

    pub(super) async fn write_payload(&mut self, piece: &[u8]) -> io::Result<()> {
        // The chunk's header record goes out with (just before) its first piece.
        self.flush().await?;
        // Zero copy on the plaintext path: glommio hands the slice (of a map) to send(2).
        self.stream.write_all(piece).await
    }

    pub(super) fn bytes_received(&self) -> u64 {
        self.received
    }
}

/// The TCP-only send paths: gather writes and `sendfile(2)` on the socket's descriptor
/// (`node::sys`), falling back to glommio's own write (and its `POLLOUT` wait, with the
/// stream's write timeout) whenever the socket is full.
impl StreamConn<TcpStream> {
    /// Writes the queued records (a chunk's header), then `piece`, in one `sendmsg(2)` when
    /// the socket has room for both (else what did not fit goes through glommio's write).
    pub(super) async fn write_payload_vectored(&mut self, piece: &[u8]) -> io::Result<()> {
        let (head, body) = self.send_now(piece, false)?;
        let sent = self.stream.write_all(&self.out[head..]).await;
        self.out.clear();
        sent?;
        self.stream.write_all(&piece[body..]).await
    }

    /// Sends the queued records and then as much of `piece` as the socket takes now, in
    /// one gather `sendmsg`; returns how much of each went out.
    fn send_now(&self, piece: &[u8], more: bool) -> io::Result<(usize, usize)> {
        let total = self.out.len() + piece.len();
        let n = match sys::send_vectored(&self.stream, &[&self.out, piece], more)? {
            Sent::Bytes(n) => n.min(total),
            Sent::Full => 0,
        };
        let head = n.min(self.out.len());
        Ok((head, n - head))
    }

    /// Sends a plaintext chunk: the queued records and `header` (one `sendmsg` with
    /// `MSG_MORE`, so they share a segment with the payload), then `len` payload bytes of
    /// `file` from `offset` with `sendfile(2)`: page-cache pages are attached to the
    /// socket, no byte is copied and no byte is read in user space, except one byte per
    /// wait: when the socket is full, the next byte is pread and written through glommio,
    /// whose write waits for `POLLOUT` (io_uring `POLL_ADD`, the stream's write timeout).
    ///
    /// Errors: `UnexpectedEof` when the file ends before `offset + len` (truncated while
    /// served; some of the chunk may be on the wire already, so the connection must end),
    /// and any socket or read error. Either way the chunk is not whole on the wire.
    pub(super) async fn send_file_chunk(
        &mut self,
        header: &[u8],
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<()> {
        if self.seals() {
            return Err(io::Error::other("plaintext chunk on a sealed connection"));
        }
        if !self.nonblocking {
            sys::set_nonblocking(&self.stream)?;
            self.nonblocking = true;
        }
        self.push_frame(header);
        let (head, _) = self.send_now(&[], len > 0)?;
        // Whatever did not fit (the socket is full): glommio waits for room and writes it.
        let sent = self.stream.write_all(&self.out[head..]).await;
        self.out.clear();
        sent?;
        let end = offset + len as u64;
        let mut at = offset;
        while at < end {
            let left = usize::try_from(end - at).unwrap_or(usize::MAX);
            match sys::sendfile(&self.stream, file, at, left)? {
                Sent::Bytes(0) => return Err(shrank()),
                Sent::Bytes(n) => at += n as u64,
                Sent::Full => {
                    let mut byte = [0u8; 1];
                    if file.read_at(&mut byte, at)? == 0 {
                        return Err(shrank());
                    }
                    self.stream.write_all(&byte).await?;
                    at += 1;
                }
            }
        }
        Ok(())
    }
}

/// A file that ended before the chunk did: it shrank while served.
fn shrank() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while its chunk was sent")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_lite::future;
    use glommio::net::TcpListener;

    use super::*;
    use crate::crypto::{Encryption, Identity};

    const SEEDER: &[u8] = include_bytes!("../../../tests/fixtures/identities/node00.pk8.der");
    const GETTER: &[u8] = include_bytes!("../../../tests/fixtures/identities/node01.pk8.der");

    fn plaintext(key: &[u8]) -> Arc<NodeSecurity> {
        let id = Identity::from_pkcs8_der(key).unwrap();
        NodeSecurity::new(id, None, Encryption::Off).unwrap()
    }

    /// A plaintext connection over loopback, after its handshake: (seeder's end, other end).
    async fn pair() -> (TcpConn, TcpConn) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (seeder, getter) = (plaintext(SEEDER), plaintext(GETTER));
        let server = async {
            let s = l.accept().await.unwrap();
            let side = TcpSide::Server { received: Default::default() };
            TcpConn::establish(s, &seeder, side, 1 << 20, None).await.unwrap()
        };
        let client = async {
            let s = TcpStream::connect(addr).await.unwrap();
            let side = TcpSide::Client { expected: None };
            TcpConn::establish(s, &getter, side, 1 << 20, None).await.unwrap()
        };
        future::zip(server, client).await
    }

    /// `len` bytes that differ from chunk to chunk and from their own shifts.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("served.bin");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    /// Chunks larger than both socket buffers go out whole and in order through sendfile,
    /// the waits for room in between (the one byte written through glommio) included.
    #[test]
    fn sendfile_chunks_arrive_whole_and_in_order() {
        let content = pattern(24 << 20);
        let (_dir, path) = file_of(&content);
        let received = crate::node::run_local(async {
            let (mut server, mut client) = pair().await;
            let file = File::open(&path).unwrap();
            let send = async {
                server.send_file_chunk(b"first header", &file, 1 << 20, 20 << 20).await.unwrap();
                server.send_file_chunk(b"second", &file, 5, 1000).await.unwrap();
                // An empty payload sends its header alone.
                server.send_file_chunk(b"third", &file, 0, 0).await.unwrap();
                drop(server);
            };
            let mut got = Vec::new();
            let recv = async { client.stream.read_to_end(&mut got).await.unwrap() };
            future::zip(send, recv).await;
            got
        })
        .unwrap();
        let mut want = b"first header".to_vec();
        want.extend_from_slice(&content[1 << 20..21 << 20]);
        want.extend_from_slice(b"second");
        want.extend_from_slice(&content[5..1005]);
        want.extend_from_slice(b"third");
        assert!(received.len() == want.len() && received == want, "{} bytes", received.len());
    }

    /// A file truncated while its chunk is being sent: the send fails with
    /// `UnexpectedEof` after exactly the bytes that still exist (no SIGBUS, no other byte),
    /// so the caller ends the connection and the peer sees a cut record.
    #[test]
    fn a_file_truncated_under_sendfile_is_a_clean_error() {
        let content = pattern(32 << 20);
        let (_dir, path) = file_of(&content);
        let (sent, received) = crate::node::run_local(async {
            let (mut server, mut client) = pair().await;
            let file = File::open(&path).unwrap();
            let send = async {
                // 32 MiB cannot fit in the socket buffers: this waits for room.
                let sent = server.send_file_chunk(b"header", &file, 0, 32 << 20).await;
                drop(server);
                sent
            };
            let mut got = Vec::new();
            let recv = async {
                // Runs once the seeder's end waits: the file shrinks under it.
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(12 << 20).unwrap();
                client.stream.read_to_end(&mut got).await.unwrap();
            };
            let (sent, ()) = future::zip(send, recv).await;
            (sent, got)
        })
        .unwrap();
        let e = sent.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        let mut want = b"header".to_vec();
        want.extend_from_slice(&content[..12 << 20]);
        assert!(received.len() == want.len() && received == want, "{} bytes", received.len());

        // Truncated to nothing before the chunk starts: the header goes, no payload byte.
        let (sent, received) = crate::node::run_local(async {
            let (mut server, mut client) = pair().await;
            let file = File::open(&path).unwrap();
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
            let sent = server.send_file_chunk(b"header", &file, 0, 1 << 20).await;
            drop(server);
            let mut got = Vec::new();
            client.stream.read_to_end(&mut got).await.unwrap();
            (sent, got)
        })
        .unwrap();
        assert_eq!(sent.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(received, b"header");
    }
}
