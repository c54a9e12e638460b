//! The transport seam: what moves a peer-wire connection's bytes. It sits between the
//! sans-IO sessions (`crate::peer`) and the OS: a transport writes the frames a session
//! hands it and the chunk payloads the seeder reads for it, and reads bytes into the
//! connection's deframer (`crate::wire::frame`). It interprets nothing: it never decodes a
//! body, matches a response or decides to refuse.
//!
//! A closed set, an enum and not a trait object: TCP and WebRTC data channels. Each keeps
//! what its medium is good at: TCP sends a plaintext payload straight from the file with
//! `sendfile(2)` (page-cache pages attached, no copy: [`Conn::send_file_chunk`]) or seals a
//! pread buffer in place and sends it with its header in one gather write; a data channel
//! copies every byte into its messages (blocks of at most `WEBRTC_BLOCK_BYTES`), so it is
//! never handed a file ([`Conn::sends_files`]): the seeder preads the chunk first.

mod stun;
mod tcp;
mod turn;
pub(super) mod webrtc;

use std::io;

use bytes::BytesMut;

pub(super) use tcp::{StreamConn, TcpConn, TcpSide};
pub use turn::{TurnPassword, TurnServer};
pub(super) use webrtc::RtcStream;

use crate::crypto::{NodeId, RecordAad};
use crate::wire::frame::{Deframed, FrameError};

/// Why a transport could not hand over the next record.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecvError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed cleanly between records.
    #[error("peer closed the connection")]
    Closed,
    /// The peer closed in the middle of a record.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The bytes did not deframe (for the session to judge).
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// An established peer-wire connection (after its handshake), whatever carries it.
pub(super) enum Conn {
    Tcp(TcpConn),
    /// A WebRTC data channel (RFC 8831) read and written as a byte stream.
    Rtc(StreamConn<RtcStream>),
}

/// Which transport a connection uses (the per-peer report names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A TCP connection.
    Tcp,
    /// A WebRTC data channel over UDP (ICE, DTLS, SCTP).
    Webrtc,
}

impl Conn {
    /// The node the handshake authenticated; `None` for a browser's session, which runs no
    /// handshake (ARCHITECTURE.md, "Browser peers").
    pub(super) fn node_id(&self) -> Option<NodeId> {
        match self {
            Self::Tcp(c) => c.peer_id(),
            Self::Rtc(c) => c.peer_id(),
        }
    }

    /// The node a connection *this node opened* proved: those always run the handshake
    /// (only a seeder holds browser sessions, and it asks [`Conn::node_id`]). A browser's
    /// reads as the all-zero ID, which no public key hashes to in practice.
    pub(super) fn peer_id(&self) -> NodeId {
        self.node_id().unwrap_or(NodeId::from_bytes([0; crate::crypto::NODE_ID_BYTES]))
    }

    /// Whether payloads are sealed (records on): then the caller hands
    /// [`Conn::seal_chunk`] a buffer, else [`Conn::begin_plain_chunk`] the header and the
    /// payload's slices to [`Conn::write_payload`].
    pub(super) fn seals(&self) -> bool {
        match self {
            Self::Tcp(c) => c.seals(),
            Self::Rtc(c) => c.seals(),
        }
    }

    /// Reads until a control record or an announced payload is whole.
    pub(super) async fn recv(&mut self) -> Result<Deframed, RecvError> {
        match self {
            Self::Tcp(c) => c.recv().await,
            Self::Rtc(c) => c.recv().await,
        }
    }

    /// The body of the control record [`Conn::recv`] just returned.
    pub(super) fn body(&self) -> &[u8] {
        match self {
            Self::Tcp(c) => c.body(),
            Self::Rtc(c) => c.body(),
        }
    }

    /// The next `len` bytes are a chunk payload bound to `aad` (the session said so).
    pub(super) fn expect_payload(&mut self, len: u32, aad: RecordAad) {
        match self {
            Self::Tcp(c) => c.expect_payload(len, aad),
            Self::Rtc(c) => c.expect_payload(len, aad),
        }
    }

    /// Queues complete frames (prefix and body) as control records; [`Conn::flush`] sends.
    pub(super) fn push_frame(&mut self, frame: &[u8]) {
        match self {
            Self::Tcp(c) => c.push_frame(frame),
            Self::Rtc(c) => c.push_frame(frame),
        }
    }

    /// Sends the queued control records.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(c) => c.flush().await,
            Self::Rtc(c) => c.flush().await,
        }
    }

    /// Starts a chunk on a plaintext connection: queues `header`; the payload follows as
    /// is, in pieces, through [`Conn::write_payload`] (from a buffer the seeder pread; an
    /// unpaced plaintext chunk over TCP goes through [`Conn::send_file_chunk`] instead).
    pub(super) fn begin_plain_chunk(&mut self, header: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(c) => c.begin_plain_chunk(header),
            Self::Rtc(c) => c.begin_plain_chunk(header),
        }
    }

    /// Starts a chunk on a sealed connection: queues `header`'s record and seals `buf` (the
    /// payload, read there by pread, followed by `TAG_BYTES` of room) in place, as one
    /// record. The caller then writes all of `buf`, in pieces if it likes, through
    /// [`Conn::write_payload`]: the record is sealed once, however it is paced.
    pub(super) fn seal_chunk(
        &mut self,
        header: &[u8],
        aad: RecordAad,
        buf: &mut [u8],
    ) -> io::Result<()> {
        match self {
            Self::Tcp(c) => c.seal_chunk(header, aad, buf),
            Self::Rtc(c) => c.seal_chunk(header, aad, buf),
        }
    }

    /// Writes the queued records (a chunk's header), then `piece`: the next bytes of the
    /// chunk payload begun with [`Conn::begin_plain_chunk`] or [`Conn::seal_chunk`].
    pub(super) async fn write_payload(&mut self, piece: &[u8]) -> io::Result<()> {
        match self {
            // Over TCP the header record and the piece leave in one gather write.
            Self::Tcp(c) => c.write_payload_vectored(piece).await,
            Self::Rtc(c) => c.write_payload(piece).await,
        }
    }

    /// Writes the queued records (a chunk's header), then `piece`, handing the buffer itself
    /// over: a data channel sends messages cut from it without copying
    /// (`RtcStream::write_owned`). TCP writes it as [`Conn::write_payload`] does.
    pub(super) async fn write_payload_owned(&mut self, piece: BytesMut) -> io::Result<()> {
        match self {
            Self::Tcp(c) => c.write_payload_vectored(&piece).await,
            Self::Rtc(c) => {
                c.flush().await?;
                c.stream().write_owned(piece).await
            }
        }
    }

    /// Whether a plaintext chunk is best read into a buffer of its own and handed over with
    /// [`Conn::write_payload_owned`]: a data channel, whose messages are owned buffers.
    pub(super) fn takes_owned_payloads(&self) -> bool {
        matches!(self, Self::Rtc(_))
    }

    /// Which transport carries this connection.
    pub(super) fn transport(&self) -> Transport {
        match self {
            Self::Tcp(_) => Transport::Tcp,
            Self::Rtc(_) => Transport::Webrtc,
        }
    }

    /// The candidate types of the ICE pair a data channel runs over, `LOCAL-REMOTE`
    /// (`host-host`, `srflx-srflx`, …); `None` over TCP.
    pub(super) fn ice_pair(&self) -> Option<String> {
        match self {
            Self::Tcp(_) => None,
            Self::Rtc(c) => c.stream().ice_pair(),
        }
    }

    /// Whether a plaintext chunk may be sent straight from its file with
    /// [`Conn::send_file_chunk`]: TCP without records. A data channel (and a sealed
    /// connection) needs the bytes in user space: the seeder preads them.
    pub(super) fn sends_files(&self) -> bool {
        matches!(self, Self::Tcp(c) if !c.seals())
    }

    /// Sends a plaintext chunk, `header` then `len` bytes of `file` from `offset`, with
    /// `sendfile(2)` (see `TcpConn::send_file_chunk`). Only where [`Conn::sends_files`].
    /// Errors: `UnexpectedEof` if the file ends inside the range (it shrank while served:
    /// part of the chunk may be on the wire, the connection must end), or any socket error.
    pub(super) async fn send_file_chunk(
        &mut self,
        header: &[u8],
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<()> {
        match self {
            Self::Tcp(c) => c.send_file_chunk(header, file, offset, len).await,
            Self::Rtc(_) => Err(io::Error::other("a data channel cannot send from a file")),
        }
    }

    /// Bytes read from the peer so far. A reader that sees this grow knows the peer is
    /// delivering, even in the middle of a record (progress-based timeouts).
    pub(super) fn bytes_received(&self) -> u64 {
        match self {
            Self::Tcp(c) => c.bytes_received(),
            Self::Rtc(c) => c.bytes_received(),
        }
    }
}
