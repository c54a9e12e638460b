//! A byte stream per connection, the handshake on it, then records through the wire's
//! framer and deframer: a glommio TCP stream (`TcpConn`), or a WebRTC data channel read
//! as a stream (`StreamConn<RtcStream>`, see `webrtc.rs`). Payload bytes are read straight into the chunk buffer the
//! deframer hands out; a plaintext payload is written from the caller's slice (a memory map
//! on the seeder: zero copy), a sealed one from the caller's buffer, sealed in place.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::RecvError;
use crate::crypto::record::TAG_BYTES;
use crate::crypto::{NodeId, RecordAad, Session};
use crate::node::secure::{
    handshake_initiator, handshake_responder, HandshakeFailure, NodeSecurity,
};
use crate::wire::frame::{Deframed, Deframer, Framer};

/// Which end of the handshake this node runs.
#[derive(Debug, Clone, Copy)]
pub(in crate::node) enum TcpSide {
    /// We connected; the peer must prove to be `expected` if given.
    Client { expected: Option<NodeId> },
    /// We accepted.
    Server,
}

/// An established connection over a byte stream `S`.
pub(in crate::node) struct StreamConn<S> {
    stream: S,
    peer: NodeId,
    framer: Framer,
    deframer: Deframer,
    /// Control records waiting for [`TcpConn::flush`]; reused so the hot path does not
    /// allocate.
    out: Vec<u8>,
    /// Bytes read from the socket so far.
    received: u64,
}

/// An established TCP connection.
pub(in crate::node) type TcpConn = StreamConn<TcpStream>;

impl<S: AsyncRead + AsyncWrite + Unpin> StreamConn<S> {
    /// Runs the handshake on `stream` (unbuffered, so no byte after it is read early) and
    /// sets up the records. Incoming control records are limited to `body_max` bytes.
    pub(in crate::node) async fn establish(
        mut stream: S,
        security: &NodeSecurity,
        side: TcpSide,
        body_max: u32,
    ) -> Result<Self, HandshakeFailure> {
        let session = match side {
            TcpSide::Client { expected } => {
                handshake_initiator(&mut stream, security, expected).await?
            }
            TcpSide::Server => handshake_responder(&mut stream, security).await?,
        };
        Ok(Self::new(stream, session, body_max))
    }

    fn new(stream: S, session: Session, body_max: u32) -> Self {
        let peer = session.peer_id();
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
        }
    }

    /// The underlying stream (a TCP socket's options).
    pub(in crate::node) fn stream(&self) -> &S {
        &self.stream
    }

    pub(super) fn peer_id(&self) -> NodeId {
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
