//! WebRTC data channels: the sans-IO `rtc` crate (ICE, RFC 8445; STUN, RFC 5389; DTLS;
//! SCTP; data channels, RFC 8831/8832) driven from a glommio UDP socket and glommio timers.
//!
//! An [`Endpoint`] is one UDP socket and the peer connections behind it: a seeder shard has
//! one (SO_REUSEPORT, like its TCP listener) serving many peers; a downloader's connection
//! has one of its own, connected to the seeder, serving one. Two tasks run an endpoint, both
//! on the shard that owns it:
//!
//! - the *receiver* (a task of its own) waits with a one-byte peek, which consumes nothing,
//!   then takes what is queued with non-blocking receives (`sys::recv_segments`: with UDP
//!   GRO one call returns a run of datagrams, written into one `BytesMut`), hands each
//!   datagram to the peer connection of its source address as a piece of that buffer (no
//!   copy), wakes the driver and yields to it;
//! - the *driver* sends what the connections want sent (`poll_write`, gathered into runs of
//!   one destination and size, each run one UDP GSO send: `sys::send_segments`), fires
//!   their timers (`poll_timeout` → glommio sleep → `handle_timeout`), moves received
//!   messages into each channel's inbox, and sleeps until the next deadline or a wake-up.
//!   A round visits only the connections on the ready list (a datagram came, their stream
//!   read or wrote, their timer in the endpoint's heap is due), so its cost follows what
//!   happened, not how many sessions the shard holds. It awaits only timers and
//!   notifications, never a glommio socket future (see `run`).
//!
//! A channel is a [`RtcStream`]: a reliable, ordered data channel that the downloader opens
//! in band (DCEP, RFC 8832: the seeder has the channel before any data can reach it, and
//! a browser opens channels the same way), read and written as a byte stream. Writes go out as messages of at most the endpoint's
//! block size (64 KiB by default: a browser's message cap), and block while more than
//! `WEBRTC_SEND_BUFFER_BYTES` are outstanding in SCTP (back-pressure). Reads take bytes from
//! the messages in order; at most `WEBRTC_RECV_BUFFER_BYTES` wait in the inbox, beyond that
//! the driver leaves them in SCTP, whose receive window then throttles the sender. The
//! node's authenticated handshake runs inside the stream, exactly as over TCP, bound to the
//! channel's DTLS ([`RtcStream::channel_binding`]), whose encryption then replaces our own
//! records (ARCHITECTURE.md, "WebRTC data channels").
//!
//! Signaling, first slice: the offer and answer travel as single datagrams on the same UDP
//! socket, told apart from STUN/DTLS by their first byte (RFC 7983 leaves 192..=255
//! unassigned). They are not signed: a forged or tampered answer can at worst make the
//! connection fail, because the handshake inside the channel authenticates the node (and
//! pins its ID), whatever DTLS certificate was negotiated. Offers must be padded to
//! `WEBRTC_OFFER_MIN_BYTES` and an answer is never larger than its offer, so a spoofed
//! source cannot use a seeder to amplify traffic.
//!
//! Everything a datagram carries is hostile: signaling datagrams are bounded and parsed
//! without panics, SDP goes to `rtc`'s parser and errors drop the offer, datagrams from
//! unknown sources are dropped, a shard holds at most `channels_max` connections, and a
//! connection that does not open within its deadline is closed.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{future, AsyncRead, AsyncWrite};
use glommio::net::UdpSocket;
use rtc::data_channel::{RTCDataChannelId, RTCDataChannelInit};
use rtc::peer_connection::configuration::setting_engine::{
    SctpMaxMessageSize, SettingEngineBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, CandidateRelayConfig, CandidateServerReflexiveConfig,
    RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::stun::StunClient;
use super::turn::{TurnRelay, TurnServer};
use crate::config::{
    BROWSER_ICE_KEEPALIVE_MS, BROWSER_ICE_SILENCE_MS, WEBRTC_BLOCK_BYTES, WEBRTC_BLOCK_MAX_BYTES,
    WEBRTC_BUSY_RETRY_MS, WEBRTC_ICE_CHECKS_PER_PAIR, WEBRTC_ICE_CHECK_INTERVAL_MS,
    WEBRTC_LOOPBACK_SCTP_MTU, WEBRTC_OFFER_MIN_BYTES, WEBRTC_OFFER_RETRY_MS,
    WEBRTC_RECV_BUFFER_BYTES, WEBRTC_SEND_BUFFER_BYTES, WEBRTC_SIGNAL_MAX_BYTES,
    WEBRTC_STUN_REFRESH_SECS, WEBRTC_STUN_RETRY_MS, WEBRTC_STUN_WAIT_MS, WEBRTC_TURN_WAIT_MS,
};
use crate::crypto::dtls_channel_binding;
use crate::crypto::signal::{CandidateKind, SignalCandidate, SIGNAL_CANDIDATES_MAX};
use crate::node::clock;
use crate::node::sys::{self, Sent, UDP_BATCH_MAX_BYTES, UDP_SEGMENTS_MAX};
use crate::node::wake::Notify;

/// First byte of a signaling datagram (RFC 7983 §7: 192..=255 is unassigned, so it can
/// never be mistaken for STUN, DTLS, TURN or RTP).
const SIGNAL_MAGIC: u8 = 0xF6;
const KIND_OFFER: u8 = 1;
const KIND_ANSWER: u8 = 2;
/// "Busy": the shard runs `WEBRTC_HANDSHAKES_PER_SHARD` set-ups already (see [`Busy`]).
const KIND_BUSY: u8 = 3;
/// A busy answer's body: the pause asked for (u32 LE, ms), set-ups settled (u32 LE).
const BUSY_BODY_BYTES: usize = 8;
/// Longest pause a busy answer may ask an offerer for, in milliseconds.
const BUSY_PAUSE_MAX_MS: u64 = 4_000;
/// Offers a shard keeps waiting for a set-up slot (see [`Waiting`]); beyond, an offer is
/// told busy without a place in the queue, as if it had not come.
const WAITING_MAX: usize = 4096;
/// A waiting offer not offered again for this long is dropped from the queue: its sender
/// (who offers again every one to two busy pauses) is gone.
const WAITING_STALE: Duration = Duration::from_millis(WEBRTC_BUSY_RETRY_MS * 10);

/// An offer by datagram told "busy", waiting for a set-up slot: admitted oldest first, so
/// that a crowd's late comer waits its turn rather than its luck. Its sender keeps offering
/// (which keeps its place: `seen`) until the answer comes.
struct Waiting {
    from: SocketAddr,
    offer: Signal,
    offer_len: usize,
    seen: Instant,
}
/// magic, kind, nonce (u64 LE), SDP length (u16 LE).
const SIGNAL_HEADER_BYTES: usize = 12;
const CHANNEL_LABEL: &str = "furymesh";
/// Addresses routed to one session: its signaled candidates and the peer-reflexive ones
/// its peer's checks came from.
const PEER_REFLEXIVE_ROUTES_MAX: usize = 8;
/// Receives (each up to `UDP_BATCH_MAX_BYTES` of coalesced datagrams) the receiver takes
/// in a row before it lets the driver run.
const RECEIVES_PER_ROUND: usize = 64;
/// How long the driver waits when the socket's send buffer is full before it tries again,
/// and how many times it tries before it drops the datagrams (`WEBRTC_SOCKET_BUFFER_BYTES`
/// drain in a few milliseconds at the rates a data channel reaches).
const SEND_FULL_WAIT: Duration = Duration::from_millis(1);
const SEND_FULL_TRIES: u32 = 100;

/// Datagrams on their way out, gathered for one UDP GSO send (`sys::send_segments`): a
/// run to one destination, all of one size but the last, which may be shorter (the shape
/// the kernel cuts a GSO send into), at most `UDP_SEGMENTS_MAX` of them and
/// `UDP_BATCH_MAX_BYTES` in all. SCTP's full packets are all one size, so a burst of them
/// from `poll_write` goes in one system call. The datagrams stay the buffers `rtc` handed
/// over, gathered by the kernel (`sys::send_gather`), never copied into one.
#[derive(Debug, Default)]
struct Batch {
    to: Option<SocketAddr>,
    datagrams: Vec<BytesMut>,
    /// Bytes in `datagrams`.
    len: usize,
    /// Size of every datagram but the last; 0 when empty.
    segment: usize,
    /// The last datagram was shorter than `segment`: nothing more can follow it.
    sealed: bool,
}

impl Batch {
    /// Appends `d` (a datagram to `to`) if it continues the run; gives it back if the batch
    /// must be sent first (another destination or size, a shorter datagram before, full).
    /// An empty batch takes any datagram of at most `UDP_BATCH_MAX_BYTES`.
    fn push(&mut self, to: SocketAddr, d: BytesMut) -> Result<(), BytesMut> {
        if d.is_empty() || d.len() > UDP_BATCH_MAX_BYTES {
            // Nothing UDP could carry: dropped, as the socket would refuse it.
            return Ok(());
        }
        if self.datagrams.is_empty() {
            self.to = Some(to);
            self.segment = d.len();
        } else if self.to != Some(to)
            || self.sealed
            || d.len() > self.segment
            || self.datagrams.len() >= UDP_SEGMENTS_MAX
            || self.len + d.len() > UDP_BATCH_MAX_BYTES
        {
            return Err(d);
        }
        self.sealed = d.len() < self.segment;
        self.len += d.len();
        self.datagrams.push(d);
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    fn clear(&mut self) {
        self.datagrams.clear();
        self.len = 0;
        self.to = None;
        self.segment = 0;
        self.sealed = false;
    }
}

/// A signaling message: an SDP offer or answer (RFC 8866 text), and the nonce that pairs an
/// answer with its offer (and a retransmitted offer with the answer already given).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signal {
    kind: u8,
    nonce: u64,
    sdp: String,
}

impl Signal {
    /// `magic ‖ kind ‖ nonce u64 LE ‖ len u16 LE ‖ sdp ‖ zero padding up to `min_len``.
    fn encode(&self, min_len: usize) -> Option<Vec<u8>> {
        let len = u16::try_from(self.sdp.len()).ok()?;
        let mut out = Vec::with_capacity((SIGNAL_HEADER_BYTES + self.sdp.len()).max(min_len));
        out.push(SIGNAL_MAGIC);
        out.push(self.kind);
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.sdp.as_bytes());
        if out.len() < min_len {
            out.resize(min_len, 0);
        }
        (out.len() <= WEBRTC_SIGNAL_MAX_BYTES).then_some(out)
    }

    /// Parses a datagram that starts with [`SIGNAL_MAGIC`]; `None` for anything malformed
    /// (too long, truncated, unknown kind, SDP not UTF-8).
    fn decode(d: &[u8]) -> Option<Self> {
        if d.len() < SIGNAL_HEADER_BYTES || d.len() > WEBRTC_SIGNAL_MAX_BYTES {
            return None;
        }
        if d[0] != SIGNAL_MAGIC || !matches!(d[1], KIND_OFFER | KIND_ANSWER) {
            return None;
        }
        let nonce = u64::from_le_bytes(d[2..10].try_into().ok()?);
        let len = u16::from_le_bytes(d[10..12].try_into().ok()?) as usize;
        let sdp = d.get(SIGNAL_HEADER_BYTES..SIGNAL_HEADER_BYTES + len)?;
        let sdp = std::str::from_utf8(sdp).ok()?.to_owned();
        Some(Self { kind: d[1], nonce, sdp })
    }
}

/// A seeder shard's answer to an offer it has no room for (admission control): no session
/// was made; offer again after `retry_ms`. `settled` counts the set-ups the shard has
/// finished (opened or given up) so far: an offerer told "busy" again and again waits as
/// long as that count moves, and no longer than its timeout once it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Busy {
    nonce: u64,
    retry_ms: u32,
    settled: u32,
}

impl Busy {
    /// `magic ‖ KIND_BUSY ‖ nonce u64 LE ‖ 8 u16 LE ‖ retry_ms u32 LE ‖ settled u32 LE`: 20
    /// bytes, far less than the padded offer it answers.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNAL_HEADER_BYTES + BUSY_BODY_BYTES);
        out.push(SIGNAL_MAGIC);
        out.push(KIND_BUSY);
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out.extend_from_slice(&(BUSY_BODY_BYTES as u16).to_le_bytes());
        out.extend_from_slice(&self.retry_ms.to_le_bytes());
        out.extend_from_slice(&self.settled.to_le_bytes());
        out
    }

    /// Parses a busy answer; `None` for anything else or malformed.
    fn decode(d: &[u8]) -> Option<Self> {
        if d.len() != SIGNAL_HEADER_BYTES + BUSY_BODY_BYTES || d[..2] != [SIGNAL_MAGIC, KIND_BUSY] {
            return None;
        }
        let u32_at = |i: usize| Some(u32::from_le_bytes(d.get(i..i + 4)?.try_into().ok()?));
        if u16::from_le_bytes([d[10], d[11]]) as usize != BUSY_BODY_BYTES {
            return None;
        }
        Some(Self {
            nonce: u64::from_le_bytes(d[2..10].try_into().ok()?),
            retry_ms: u32_at(SIGNAL_HEADER_BYTES)?,
            settled: u32_at(SIGNAL_HEADER_BYTES + 4)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Open,
    Closed,
}

/// One peer connection with its data channel, shared by the endpoint's tasks and the
/// [`RtcStream`] that reads and writes it (all on one shard: `Rc`, `RefCell`, never
/// borrowed across an await).
struct Channel {
    pc: RefCell<RTCPeerConnection>,
    /// The channel: the one the client created; on a server, the first the peer opened.
    dc: Cell<Option<RTCDataChannelId>>,
    /// Our address as the peer sees it (the host candidate's), for `handle_read`.
    local: SocketAddr,
    /// The peer's address (where its offer came from, or where ours went).
    remote: SocketAddr,
    /// Its key in the endpoint's `channels`.
    key: SocketAddr,
    /// On the endpoint's `ready` list (something happened: the driver handles it).
    ready: Cell<bool>,
    /// When the driver's timer list next visits it (the earliest of `poll_timeout` and, while
    /// connecting, `open_deadline`), as far as the driver knows; `None`: no live entry.
    visit: Cell<Option<Instant>>,
    state: Cell<State>,
    /// Closed unless open by then (a client moves it: its set-up starts when answered).
    open_deadline: Cell<Instant>,
    /// When the session was made (server: its offer answered), for the set-up time.
    created: Instant,
    /// Counted among the endpoint's set-ups in progress (`Endpoint::connecting`).
    counted: Cell<bool>,
    /// ICE found a pair (RFC 8445 §8), and DTLS finished over it (the connection's state
    /// `connected`): the set-up's phases, for the seeder's counters.
    ice_connected: Cell<bool>,
    dtls_connected: Cell<bool>,
    /// Received messages not yet read, and how far into the first one the reader is.
    inbox: RefCell<VecDeque<BytesMut>>,
    inbox_bytes: Cell<usize>,
    read_offset: Cell<usize>,
    reader: RefCell<Option<Waker>>,
    /// A writer waiting for the channel to open or for SCTP to drain.
    writer: RefCell<Option<Waker>>,
    /// The offer's nonce (server side): a retransmitted offer gets `answer` again.
    nonce: u64,
    answer: RefCell<Option<Vec<u8>>>,
    /// The stream was dropped: close the connection at the driver's next round.
    abandoned: Cell<bool>,
    /// Our ICE username fragment (RFC 8445 §5.3): the checks of the peer name it, which
    /// routes a check from an address it did not signal (peer-reflexive) to this session.
    ufrag: String,
    /// A browser's session: its offer came over the node's own HTTP gateway, so it runs
    /// the plaintext peer wire without the node handshake (ARCHITECTURE.md, "Browser
    /// peers"). Never set for an offer by datagram or through the DHT.
    browser: bool,
}

impl Channel {
    /// A connecting channel of `pc` at `(local, remote, key)` (see the fields), closed
    /// unless open by `open_deadline`; `ufrag` is our ICE username fragment. No data
    /// channel yet, nonce 0, not a browser's: callers set those that differ.
    fn new(
        pc: RTCPeerConnection,
        (local, remote, key): (SocketAddr, SocketAddr, SocketAddr),
        open_deadline: Instant,
        ufrag: String,
    ) -> Self {
        Self {
            pc: RefCell::new(pc),
            dc: Cell::new(None),
            local,
            remote,
            key,
            ready: Cell::new(false),
            visit: Cell::new(None),
            state: Cell::new(State::Connecting),
            open_deadline: Cell::new(open_deadline),
            created: clock::now(),
            counted: Cell::new(false),
            ice_connected: Cell::new(false),
            dtls_connected: Cell::new(false),
            inbox: RefCell::default(),
            inbox_bytes: Cell::new(0),
            read_offset: Cell::new(0),
            reader: RefCell::default(),
            writer: RefCell::default(),
            nonce: 0,
            answer: RefCell::default(),
            abandoned: Cell::new(false),
            ufrag,
            browser: false,
        }
    }

    /// The candidate types of the pair ICE selected, `LOCAL-REMOTE` (`host`, `srflx`,
    /// `prflx`, `relay`; RFC 8445 §5.1.1), once it has selected one.
    fn ice_pair(&self) -> Option<String> {
        let pc = self.pc.borrow();
        let pair = pc.sctp()?.transport().ice_transport().get_selected_candidate_pair()?;
        Some(format!("{}-{}", pair.local().typ, pair.remote().typ))
    }

    fn close(&self) {
        if self.state.replace(State::Closed) != State::Closed {
            let _ = self.pc.borrow_mut().close();
        }
        Self::wake(&self.reader);
        Self::wake(&self.writer);
    }

    fn wake(slot: &RefCell<Option<Waker>>) {
        if let Some(w) = slot.borrow_mut().take() {
            w.wake();
        }
    }

    /// Handles the connection's events and moves received messages into the inbox (up to
    /// `WEBRTC_RECV_BUFFER_BYTES`). Returns whether it opened now.
    fn pump(&self) -> bool {
        let mut opened = false;
        let mut pc = self.pc.borrow_mut();
        while let Some(ev) = pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id))
                    if self.state.get() == State::Connecting
                        && self.dc.get().is_none_or(|dc| dc == id) =>
                {
                    self.dc.set(Some(id));
                    self.state.set(State::Open);
                    opened = true;
                }
                RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnClose(id))
                    if self.dc.get() == Some(id) =>
                {
                    self.state.set(State::Closed);
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
                ) => self.state.set(State::Closed),
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                    RTCIceConnectionState::Connected,
                ) => self.ice_connected.set(true),
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    RTCPeerConnectionState::Connected,
                ) => self.dtls_connected.set(true),
                _ => {}
            }
        }
        while self.inbox_bytes.get() < WEBRTC_RECV_BUFFER_BYTES {
            let Some(m) = pc.poll_read() else { break };
            // Messages on any other channel the peer opened are not ours: dropped.
            if let RTCMessage::DataChannelMessage(id, msg) = m.message {
                if self.dc.get() == Some(id) && !msg.data.is_empty() {
                    self.inbox_bytes.set(self.inbox_bytes.get() + msg.data.len());
                    self.inbox.borrow_mut().push_back(msg.data);
                }
            }
        }
        let writable = self
            .dc
            .get()
            .and_then(|id| pc.data_channel(id))
            .is_some_and(|dc| dc.outstanding_bytes() < WEBRTC_SEND_BUFFER_BYTES / 2);
        drop(pc);
        if self.inbox_bytes.get() > 0 {
            Self::wake(&self.reader);
        }
        if self.state.get() != State::Connecting && (writable || self.state.get() == State::Closed)
        {
            Self::wake(&self.writer);
        }
        if self.state.get() == State::Closed {
            Self::wake(&self.reader);
        }
        opened
    }
}

/// Which side of the offer/answer an endpoint is.
enum Role {
    /// A seeder shard: answers offers, queues opened channels for [`Endpoint::accept`].
    Server {
        channels_max: usize,
        /// Set-ups in progress at most before offers by datagram are answered busy.
        handshakes_max: usize,
        open_timeout: Duration,
        accepted: RefCell<VecDeque<RtcStream>>,
        acceptor: RefCell<Option<Waker>>,
    },
    /// A downloader's connection: sends one offer, waits for its answer.
    Client { answer: RefCell<Option<Signal>>, busy: Cell<Option<Busy>>, answered: Notify },
}

/// Counters of one endpoint (a shard's WebRTC side).
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::node) struct EndpointStats {
    /// Offers answered.
    pub(in crate::node) offers: u64,
    /// Offers answered "busy" (admission control: no session made).
    pub(in crate::node) offers_busy: u64,
    /// Set-ups (sessions made for answered offers) that got as far as ICE connected, and
    /// as DTLS connected; that opened their data channel (and the milliseconds from the
    /// answer to the open, summed over them); that were closed at their open deadline
    /// still connecting; and that failed before it (ICE or DTLS).
    pub(in crate::node) ice_connected: u64,
    pub(in crate::node) dtls_connected: u64,
    pub(in crate::node) opened: u64,
    pub(in crate::node) open_ms_total: u64,
    pub(in crate::node) open_timeouts: u64,
    pub(in crate::node) open_failures: u64,
    /// Offers dropped: malformed, unparseable SDP, full shard, or an answer that would have
    /// been larger than the offer.
    pub(in crate::node) offers_dropped: u64,
    /// Datagrams from sources with no connection (dropped).
    pub(in crate::node) strays: u64,
    /// Datagrams sent, and the `sendmsg` calls that sent them (UDP GSO: one call per run).
    pub(in crate::node) datagrams_sent: u64,
    pub(in crate::node) send_calls: u64,
    /// The largest datagram sent, in bytes.
    pub(in crate::node) datagram_bytes_max: u64,
    /// Datagrams received, and the `recvmsg` calls that took them (UDP GRO: one call per
    /// run the kernel coalesced).
    pub(in crate::node) datagrams_received: u64,
    pub(in crate::node) receive_calls: u64,
}

/// One UDP socket and the WebRTC peer connections behind it.
pub(in crate::node) struct Endpoint {
    socket: UdpSocket,
    bound: SocketAddr,
    role: Role,
    /// Connections by their peer's key address (its first candidate, or where its offer
    /// came from).
    channels: RefCell<HashMap<SocketAddr, Rc<Channel>>>,
    /// The peer's other candidate addresses → its key address: a peer behind a NAT is
    /// heard from its server-reflexive address, not its host one.
    routes: RefCell<HashMap<SocketAddr, SocketAddr>>,
    /// STUN servers asked for this socket's mapped address (a server endpoint with
    /// `--stun`); `None` without.
    stun: RefCell<Option<StunClient>>,
    /// The TURN server a server endpoint keeps an allocation on (`--turn`), to allocate
    /// again when one fails; `None` without.
    turn_server: RefCell<Option<TurnServer>>,
    /// The allocation (RFC 8656) whose relayed address is offered as a candidate, and
    /// through which ICE sends what it sends from that candidate; `None` without TURN.
    turn: RefCell<Option<TurnRelay>>,
    /// Signaling datagrams to send.
    outbox: RefCell<VecDeque<(SocketAddr, Vec<u8>)>>,
    /// Connections something happened to (a datagram, a read or write of their stream, a
    /// timer due): the driver's next round handles these, not every connection.
    ready: RefCell<Vec<Rc<Channel>>>,
    /// When each connection wants its timers fired, earliest first; an entry whose time is
    /// not its connection's `visit` any more is stale and skipped.
    timers: RefCell<BinaryHeap<Reverse<(Instant, SocketAddr)>>>,
    wake: Notify,
    /// Set-ups in progress (sessions made, not yet open or closed); admission control
    /// answers offers by datagram busy while this is at the role's `handshakes_max`.
    connecting: Cell<usize>,
    /// Set-ups finished so far, opened or not (a busy answer tells it).
    settled: Cell<u32>,
    /// Offers told busy, oldest first, admitted as set-ups finish (server).
    waiting: RefCell<VecDeque<Waiting>>,
    stats: Cell<EndpointStats>,
    /// Largest message written (`RtcStream` cuts writes into blocks of this size).
    block: usize,
    /// Browser sessions keyed so far (their synthetic keys, see `answer_browser`).
    browser_keys: Cell<u32>,
    /// Runs of datagrams go out as one UDP GSO send; cleared for good when the kernel
    /// refuses one (`EIO`/`EINVAL`: the route's device or MTU does not allow it).
    gso: Cell<bool>,
}

/// Settings every peer connection of this crate uses: a 10 ms ICE check interval (set-up
/// in ~60 ms instead of ~250 ms on loopback, DESIGN.md), `WEBRTC_ICE_CHECKS_PER_PAIR`
/// checks before a pair fails, messages up to `max_message` bytes both ways, no mDNS. With
/// `loopback` (every path to the peer is loopback), SCTP packets of up to
/// `WEBRTC_LOOPBACK_SCTP_MTU` bytes instead of `rtc`'s 1,191.
fn new_peer_connection(
    now: Instant,
    loopback: bool,
    max_message: usize,
) -> io::Result<RTCPeerConnection> {
    let engine = SettingEngineBuilder::new();
    let engine = if loopback { engine.with_sctp_mtu(WEBRTC_LOOPBACK_SCTP_MTU) } else { engine };
    peer_connection_with(now, engine, max_message)
}

/// `127.0.0.0/8`, `::1` or `::ffff:127.x.y.z`.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

/// A browser session's peer connection: like [`new_peer_connection`], but a consent check
/// (RFC 7675) every `BROWSER_ICE_KEEPALIVE_MS` and the session failed after
/// `BROWSER_ICE_SILENCE_MS` without a byte from the browser (a live one answers every
/// check), so a closed tab frees its session within seconds rather than ICE's default 30 s.
fn browser_peer_connection(now: Instant, max_message: usize) -> io::Result<RTCPeerConnection> {
    let half = Duration::from_millis(BROWSER_ICE_SILENCE_MS / 2);
    let engine = SettingEngineBuilder::new().with_ice_timeouts(
        Some(half),
        Some(half),
        Some(Duration::from_millis(BROWSER_ICE_KEEPALIVE_MS)),
    );
    peer_connection_with(now, engine, max_message)
}

/// `max_message` is announced in the SDP (`a=max-message-size`, RFC 8841) and bounds what
/// either side sends; `rtc` keeps a zeroed working buffer of the negotiated size (the
/// smaller of the two) for every connection's whole life. So a seeder offers its own block
/// size (`WEBRTC_BLOCK_BYTES`, 64 KiB, by default), not the 256 KiB most it could be
/// configured to: 192 KiB less per session (tuning.md, the 1,000-session soak), and
/// downloaders offer `WEBRTC_BLOCK_MAX_BYTES` so that they take any seeder's blocks.
fn peer_connection_with(
    now: Instant,
    engine: SettingEngineBuilder,
    max_message: usize,
) -> io::Result<RTCPeerConnection> {
    let max_message = max_message.clamp(1, WEBRTC_BLOCK_MAX_BYTES) as u32;
    let engine = engine
        .with_ice_connection_attempts(
            Some(Duration::from_millis(WEBRTC_ICE_CHECK_INTERVAL_MS)),
            Some(WEBRTC_ICE_CHECKS_PER_PAIR),
        )
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(max_message))
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(engine)
        .build(now)
        .map_err(rtc_io)
}

fn rtc_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("webrtc: {e}"))
}

/// What every candidate of ours says: UDP, `addr`, the one component a data channel uses.
fn udp_candidate(addr: SocketAddr) -> CandidateConfig {
    CandidateConfig {
        network: "udp".to_owned(),
        address: addr.ip().to_string(),
        port: addr.port(),
        component: 1,
        ..Default::default()
    }
}

/// A host candidate (RFC 8445 §5.1.1.1) for `addr`.
fn host_candidate(addr: SocketAddr) -> io::Result<RTCIceCandidateInit> {
    let c = CandidateHostConfig { base_config: udp_candidate(addr), ..Default::default() }
        .new_candidate_host()
        .map_err(rtc_io)?;
    RTCIceCandidate::from(&c).to_json().map_err(rtc_io)
}

/// A server-reflexive candidate (RFC 8445 §5.1.1.2): `addr` as a STUN server saw the
/// socket whose own address is `base`.
fn srflx_candidate(addr: SocketAddr, base: SocketAddr) -> io::Result<RTCIceCandidateInit> {
    let c = CandidateServerReflexiveConfig {
        base_config: udp_candidate(addr),
        rel_addr: base.ip().to_string(),
        rel_port: base.port(),
        ..Default::default()
    }
    .new_candidate_server_reflexive()
    .map_err(rtc_io)?;
    RTCIceCandidate::from(&c).to_json().map_err(rtc_io)
}

/// A relayed candidate (RFC 8445 §5.1.1.2): `addr` is an allocation's relayed transport
/// address on a TURN server (RFC 8656 §2), obtained from the socket whose address is `base`.
fn relay_candidate(addr: SocketAddr, base: SocketAddr) -> io::Result<RTCIceCandidateInit> {
    let c = CandidateRelayConfig {
        base_config: udp_candidate(addr),
        rel_addr: base.ip().to_string(),
        rel_port: base.port(),
        ..Default::default()
    }
    .new_candidate_relay()
    .map_err(rtc_io)?;
    RTCIceCandidate::from(&c).to_json().map_err(rtc_io)
}

/// The ICE candidate for a signaled one (a peer's): host, server-reflexive or relayed (a
/// relayed one is reached like any address: we send to it from our socket, its TURN
/// server forwards to the peer).
fn remote_candidate(c: &SignalCandidate) -> io::Result<RTCIceCandidateInit> {
    match c.kind {
        CandidateKind::Host => host_candidate(c.addr),
        // The peer's base is not told; the candidate's own address stands for it.
        CandidateKind::ServerReflexive => srflx_candidate(c.addr, c.addr),
        CandidateKind::Relayed => relay_candidate(c.addr, c.addr),
    }
}

/// Our candidates for a socket whose own address is `local`: the host one, the
/// server-reflexive one when STUN gave an address different from it, and the relayed one
/// when a TURN server gave an allocation.
fn local_candidates(
    local: SocketAddr,
    mapped: Option<SocketAddr>,
    relayed: Option<SocketAddr>,
) -> Vec<SignalCandidate> {
    let mut out = vec![SignalCandidate { kind: CandidateKind::Host, addr: local }];
    if let Some(m) = mapped.filter(|m| *m != local) {
        out.push(SignalCandidate { kind: CandidateKind::ServerReflexive, addr: m });
    }
    if let Some(r) = relayed {
        out.push(SignalCandidate { kind: CandidateKind::Relayed, addr: r });
    }
    out
}

/// The address a peer's session is keyed by among its signaled `candidates`: its most
/// outside direct one (server-reflexive if it has one: two peers behind different NATs with
/// the same private address stay apart), else its relayed one.
fn session_key(candidates: &[SignalCandidate]) -> Option<SocketAddr> {
    let cs = &candidates[..candidates.len().min(SIGNAL_CANDIDATES_MAX)];
    cs.iter().rev().find(|c| c.kind != CandidateKind::Relayed).or(cs.first()).map(|c| c.addr)
}

/// Adds `ours` (the first is the host one, whose address is the base) to `pc`.
fn add_local_candidates(pc: &mut RTCPeerConnection, ours: &[SignalCandidate]) -> io::Result<()> {
    let base = ours.first().map(|c| c.addr).ok_or_else(|| rtc_io("no local candidate"))?;
    for c in ours {
        let init = match c.kind {
            CandidateKind::Host => host_candidate(c.addr)?,
            CandidateKind::ServerReflexive => srflx_candidate(c.addr, base)?,
            CandidateKind::Relayed => relay_candidate(c.addr, base)?,
        };
        pc.add_local_candidate(init).map_err(rtc_io)?;
    }
    Ok(())
}

/// Adds the peer's signaled candidates to `pc` (at most `SIGNAL_CANDIDATES_MAX`).
fn add_remote_candidates(pc: &mut RTCPeerConnection, theirs: &[SignalCandidate]) -> io::Result<()> {
    for c in theirs.iter().take(SIGNAL_CANDIDATES_MAX) {
        pc.add_remote_candidate(remote_candidate(c)?).map_err(rtc_io)?;
    }
    Ok(())
}

/// The SHA-256 certificate fingerprint of a session description (RFC 8122 §5,
/// `a=fingerprint:sha-256 AB:CD:…`), `None` without one or with two that differ.
fn sdp_sha256_fingerprint(sdp: &str) -> Option<[u8; 32]> {
    let mut found: Option<[u8; 32]> = None;
    for line in sdp.lines() {
        let Some(rest) = line.trim_end().strip_prefix("a=fingerprint:") else { continue };
        let Some((algorithm, value)) = rest.split_once(' ') else { continue };
        if !algorithm.eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let bytes = value
            .trim()
            .split(':')
            .map(|h| if h.len() == 2 { u8::from_str_radix(h, 16).ok() } else { None })
            .collect::<Option<Vec<u8>>>()?;
        let fp: [u8; 32] = bytes.try_into().ok()?;
        if found.is_some_and(|f| f != fp) {
            return None;
        }
        found = Some(fp);
    }
    found
}

/// The `a=ice-ufrag` of a session description (RFC 8839 §5.4), empty if it has none.
fn ice_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default()
        .to_owned()
}

/// `sdp` without any `a=candidate` line (ICE then learns the peer's addresses from its
/// checks: peer-reflexive candidates).
pub(in crate::node) fn without_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n').filter(|l| !l.starts_with("a=candidate:")).collect()
}

/// `sdp` without its mDNS candidates (RFC 8839 `a=candidate` lines whose address ends in
/// `.local`: Chromium hides its host addresses behind them, and they resolve to nothing
/// we could reach). Every other line is kept as it is.
pub(in crate::node) fn without_mdns_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let mdns = line
            .strip_prefix("a=candidate:")
            .and_then(|c| c.split_ascii_whitespace().nth(4))
            .is_some_and(|addr| addr.to_ascii_lowercase().ends_with(".local"));
        if !mdns {
            out.push_str(line);
        }
    }
    out
}

/// The reliable, ordered channel the downloader opens (DCEP, RFC 8832).
/// The downloader's side before any signaling: a peer connection with its data channel
/// and `ours` as its candidates (host first), and the SDP offer to send (the local
/// description, so it carries the candidates).
fn offering_connection(
    ours: &[SignalCandidate],
    now: Instant,
) -> io::Result<(RTCPeerConnection, RTCDataChannelId, String)> {
    // A downloader sends requests: small packets are plenty. It takes the largest messages
    // any seeder may send.
    let mut pc = new_peer_connection(now, false, WEBRTC_BLOCK_MAX_BYTES)?;
    let dc = create_channel(&mut pc)?;
    add_local_candidates(&mut pc, ours)?;
    let offer = pc.create_offer(None).map_err(rtc_io)?;
    pc.set_local_description(now, offer.clone()).map_err(rtc_io)?;
    let sdp = pc.local_description().map(|d| d.sdp).unwrap_or(offer.sdp);
    Ok((pc, dc, sdp))
}

fn create_channel(pc: &mut RTCPeerConnection) -> io::Result<RTCDataChannelId> {
    let init = RTCDataChannelInit { ordered: true, ..Default::default() };
    Ok(pc.create_data_channel(CHANNEL_LABEL, Some(init)).map_err(rtc_io)?.id())
}

/// The local address the kernel would use toward `peer` (for a socket bound to the
/// unspecified address, which cannot name itself in a candidate).
pub(in crate::node) fn route_ip(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(peer).ok()?;
    Some(s.local_addr().ok()?.ip())
}

impl Endpoint {
    /// A seeder shard's endpoint on `socket` (bound, SO_REUSEPORT): answers offers, at most
    /// `channels_max` connections at once, each closed unless open within `open_timeout`,
    /// and offers by datagram "busy" while `handshakes_max` set-ups are in progress; writes
    /// messages of at most `block` bytes (capped at `WEBRTC_BLOCK_MAX_BYTES`).
    pub(in crate::node) fn server(
        socket: UdpSocket,
        (channels_max, handshakes_max): (usize, usize),
        open_timeout: Duration,
        block: usize,
    ) -> io::Result<Rc<Self>> {
        let role = Role::Server {
            channels_max,
            handshakes_max: handshakes_max.max(1),
            open_timeout,
            accepted: RefCell::default(),
            acceptor: RefCell::default(),
        };
        Self::new(socket, role, block)
    }

    fn new(socket: UdpSocket, role: Role, block: usize) -> io::Result<Rc<Self>> {
        let bound = socket.local_addr().map_err(super::super::glommio_io)?;
        // From here on every receive goes through `sys::recv_segments`, which splits what
        // the kernel coalesced (before, `gather` reads STUN and TURN answers whole).
        sys::enable_gro(&socket);
        Ok(Rc::new(Self {
            socket,
            bound,
            role,
            channels: RefCell::default(),
            routes: RefCell::default(),
            stun: RefCell::new(None),
            turn_server: RefCell::new(None),
            turn: RefCell::new(None),
            outbox: RefCell::default(),
            ready: RefCell::default(),
            timers: RefCell::default(),
            wake: Notify::default(),
            connecting: Cell::new(0),
            settled: Cell::new(0),
            waiting: RefCell::default(),
            stats: Cell::default(),
            block: block.clamp(1, WEBRTC_BLOCK_MAX_BYTES),
            browser_keys: Cell::new(0),
            gso: Cell::new(true),
        }))
    }

    /// Asks `servers` (STUN, RFC 8489) for this socket's mapped address while the endpoint
    /// runs, and offers it as a server-reflexive candidate in signaled answers.
    pub(in crate::node) fn set_stun(&self, servers: &[SocketAddr]) {
        *self.stun.borrow_mut() = StunClient::new(servers);
    }

    /// The socket's address outside its NAT, as its STUN servers last said.
    pub(in crate::node) fn mapped(&self) -> Option<SocketAddr> {
        self.stun.borrow().as_ref().and_then(StunClient::mapped)
    }

    /// Keeps an allocation on `server` (TURN, RFC 8656) while the endpoint runs, allocating
    /// again when one fails, and offers its relayed address as a candidate in signaled
    /// answers.
    pub(in crate::node) fn set_turn(&self, server: &TurnServer) {
        *self.turn_server.borrow_mut() = Some(server.clone());
    }

    /// The relayed address of this endpoint's TURN allocation, once allocated.
    pub(in crate::node) fn relayed(&self) -> Option<SocketAddr> {
        self.turn.borrow().as_ref().and_then(TurnRelay::relayed)
    }

    /// Asks the TURN server for permissions (RFC 8656 §9) toward each of `candidates`, so
    /// that checks from and to our relayed candidate pass it.
    fn permit(&self, candidates: &[SignalCandidate]) {
        if let Some(t) = self.turn.borrow_mut().as_mut() {
            let now = clock::now();
            for c in candidates.iter().take(SIGNAL_CANDIDATES_MAX) {
                t.permit(now, c.addr);
            }
        }
        self.wake.notify();
    }

    /// The endpoint's counters.
    pub(in crate::node) fn stats(&self) -> EndpointStats {
        self.stats.get()
    }

    fn count(&self, f: impl FnOnce(&mut EndpointStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Puts `ch` on the driver's list for its next round (once, however often it is called
    /// before that round).
    fn mark(&self, ch: &Rc<Channel>) {
        if !ch.ready.replace(true) {
            self.ready.borrow_mut().push(ch.clone());
        }
    }

    /// [`Endpoint::mark`], and wakes the driver.
    fn touch(&self, ch: &Rc<Channel>) {
        self.mark(ch);
        self.wake.notify();
    }

    /// Has the driver visit `ch` at `at` (or earlier, if an earlier visit is already due).
    fn schedule(&self, ch: &Channel, at: Instant) {
        if ch.visit.get().is_none_or(|v| at < v) {
            ch.visit.set(Some(at));
            self.timers.borrow_mut().push(Reverse((at, ch.key)));
        }
    }

    /// Marks every connection whose visit is due at `now`; returns when the next one is.
    fn due(&self, now: Instant) -> Option<Instant> {
        let mut timers = self.timers.borrow_mut();
        while let Some(&Reverse((at, key))) = timers.peek() {
            if at > now {
                return Some(at);
            }
            timers.pop();
            let ch = self.channels.borrow().get(&key).cloned();
            if let Some(ch) = ch.filter(|ch| ch.visit.get() == Some(at)) {
                ch.visit.set(None);
                self.mark(&ch);
            }
        }
        None
    }

    /// Runs the endpoint (receiver and driver) until dropped; a client's ends once its
    /// connection is closed and the closing datagrams are sent.
    pub(in crate::node) async fn run(self: Rc<Self>) {
        // The receiver is a task of its own, cancelled with this one: glommio's I/O futures
        // keep one more clone of the task's waker each time they are polled while pending,
        // so a receive polled at every wake-up of the driver (thousands a second) would
        // pile up clones until the task's reference count overflows (a panic). The driver
        // itself awaits only timers and notifications.
        let receiver = glommio::spawn_local(self.clone().receive());
        let keep = future::or(self.keep_mapped(), self.keep_relay());
        future::or(self.drive(), keep).await;
        drop(receiver);
    }

    /// Allocates on the TURN server (`set_turn`) and allocates again every
    /// `WEBRTC_STUN_REFRESH_SECS` while the allocation is failed (refused, or its server
    /// stopped answering), or when it holds every permission it may and no session is open
    /// (the old one is released first). The allocation refreshes itself (the driver runs
    /// its timers). Never returns; pending forever without a TURN server.
    async fn keep_relay(&self) {
        loop {
            let server = self.turn_server.borrow().clone();
            let Some(server) = server else { return future::pending().await };
            let renew = match self.turn.borrow().as_ref() {
                None => true,
                Some(t) => t.failed() || (t.exhausted() && self.channels.borrow().is_empty()),
            };
            if renew {
                let now = clock::now();
                if let Some(mut old) = self.turn.borrow_mut().take() {
                    old.release(now);
                    while let Some(d) = old.poll_transmit() {
                        self.outbox.borrow_mut().push_back((d.0, d.1.to_vec()));
                    }
                }
                match TurnRelay::new(&server, self.bound, now) {
                    Ok(t) => *self.turn.borrow_mut() = Some(t),
                    Err(e) => tracing::warn!("turn {}: {e}", server.addr),
                }
                self.wake.notify();
            }
            glommio::timer::sleep(Duration::from_secs(WEBRTC_STUN_REFRESH_SECS)).await;
        }
    }

    /// Asks the STUN servers for the mapped address every `WEBRTC_STUN_RETRY_MS` until one
    /// answers, then every `WEBRTC_STUN_REFRESH_SECS` (which also keeps the NAT's mapping
    /// open). Never returns; pending forever without STUN servers.
    async fn keep_mapped(&self) {
        loop {
            // The borrow ends here, before any await (the receiver takes the answers).
            let requests = self.stun.borrow_mut().as_mut().map(|s| s.requests(clock::random));
            let Some(requests) = requests else { return future::pending().await };
            self.outbox.borrow_mut().extend(requests);
            self.wake.notify();
            let wait = if self.mapped().is_some() {
                Duration::from_secs(WEBRTC_STUN_REFRESH_SECS)
            } else {
                Duration::from_millis(WEBRTC_STUN_RETRY_MS)
            };
            glommio::timer::sleep(wait).await;
        }
    }

    /// The next channel that opened (server side).
    pub(in crate::node) async fn accept(&self) -> RtcStream {
        let Role::Server { accepted, acceptor, .. } = &self.role else {
            return future::pending().await;
        };
        future::poll_fn(|cx| match accepted.borrow_mut().pop_front() {
            Some(s) => Poll::Ready(s),
            None => {
                *acceptor.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Takes what arrives on the socket: waits until a datagram is queued (a one-byte peek,
    /// which consumes nothing, so even a dropped wait loses no datagram), then takes up to
    /// `RECEIVES_PER_ROUND` receives without waiting, each one datagram or a run the kernel
    /// coalesced (UDP GRO), hands every datagram to its session, wakes the driver and
    /// yields to it.
    async fn receive(self: Rc<Self>) {
        // Datagrams go to their sessions as pieces of this buffer, not copies; once `rtc`
        // has dropped them all, the next receive reuses its allocation.
        let mut buf = BytesMut::new();
        let mut probe = [0u8; 1];
        loop {
            // An error here is the socket's pending one (an ICMP error toward a connected
            // client's peer): the receive below takes and reports it, per call.
            let _ = self.socket.peek_from(&mut probe).await;
            for _ in 0..RECEIVES_PER_ROUND {
                match sys::recv_segments(&self.socket, &mut buf, UDP_BATCH_MAX_BYTES) {
                    Ok(Some(r)) => {
                        let mut n = 0;
                        while let Some(d) = r.take_datagram(&mut buf) {
                            self.on_datagram(r.from, d);
                            n += 1;
                        }
                        self.count(|s| {
                            s.datagrams_received += n;
                            s.receive_calls += 1;
                        });
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            self.wake.notify();
            future::yield_now().await;
        }
    }

    /// Sends `batch` and empties it: one UDP GSO send when it holds several datagrams and
    /// GSO works here, else one datagram per send. Never through glommio's own send (see
    /// `run`): when the socket's buffer is full it waits `SEND_FULL_WAIT` and tries again,
    /// at most `SEND_FULL_TRIES` times, then drops what is left. A datagram the socket
    /// refuses is lost, as it could be on the wire (SCTP sends it again).
    async fn flush(&self, batch: &mut Batch) {
        let Some(to) = batch.to.filter(|_| !batch.is_empty()) else { return };
        let (count, segment) = (batch.datagrams.len(), batch.segment.max(1));
        let mut tries = 0;
        if count > 1 && self.gso.get() {
            let mut iov = [io::IoSlice::new(&[]); UDP_SEGMENTS_MAX];
            for (slot, d) in iov.iter_mut().zip(&batch.datagrams) {
                *slot = io::IoSlice::new(d);
            }
            let iov = &iov[..count];
            loop {
                match sys::send_gather(&self.socket, to, iov, segment) {
                    Ok(Sent::Bytes(_)) => {
                        self.count(|s| {
                            s.datagrams_sent += count as u64;
                            s.send_calls += 1;
                            s.datagram_bytes_max = s.datagram_bytes_max.max(segment as u64);
                        });
                        batch.clear();
                        return;
                    }
                    Ok(Sent::Full) if tries < SEND_FULL_TRIES => {
                        tries += 1;
                        glommio::timer::sleep(SEND_FULL_WAIT).await;
                        continue;
                    }
                    Ok(Sent::Full) => {
                        batch.clear();
                        return;
                    }
                    Err(e) if sys::gso_refused(&e) => {
                        self.gso.set(false);
                        tracing::warn!(
                            "webrtc: UDP GSO refused toward {to} ({e}): one datagram per \
                             send on this socket from now on"
                        );
                    }
                    // The socket's own error (a pending ICMP one, say): one by one below.
                    Err(_) => {}
                }
                break;
            }
        }
        let mut at = 0;
        while let Some(d) = batch.datagrams.get(at) {
            match sys::send_segments(&self.socket, to, d, d.len()) {
                Ok(Sent::Full) if tries < SEND_FULL_TRIES => {
                    tries += 1;
                    glommio::timer::sleep(SEND_FULL_WAIT).await;
                    continue;
                }
                Ok(Sent::Full) => break,
                Ok(Sent::Bytes(_)) => self.count(|s| {
                    s.datagrams_sent += 1;
                    s.send_calls += 1;
                    s.datagram_bytes_max = s.datagram_bytes_max.max(d.len() as u64);
                }),
                Err(_) => {}
            }
            at += 1;
        }
        batch.clear();
    }

    /// Queues datagram `d` to `to` in `batch`, sending the batch first if `d` does not
    /// continue its run.
    async fn queue(&self, batch: &mut Batch, to: SocketAddr, d: BytesMut) {
        if let Err(d) = batch.push(to, d) {
            self.flush(batch).await;
            let _ = batch.push(to, d);
        }
    }

    fn on_datagram(&self, from: SocketAddr, datagram: BytesMut) {
        let d = &datagram[..];
        if self.stun.borrow_mut().as_mut().is_some_and(|s| s.handle(from, d)) {
            return;
        }
        // The TURN server's: answers to the client, and what peers sent to our relayed
        // address (Data indications, ChannelData), each handed on as from that peer.
        let relayed = self
            .turn
            .borrow_mut()
            .as_mut()
            .filter(|t| t.server() == from)
            .map(|t| (t.relayed(), t.handle(clock::now(), d)));
        if let Some((relayed, data)) = relayed {
            if let Some(relayed) = relayed {
                for (peer, bytes) in data {
                    self.deliver(peer, Some(relayed), BytesMut::from(&bytes[..]));
                }
            }
            return;
        }
        if d.first() == Some(&SIGNAL_MAGIC) {
            match (&self.role, Signal::decode(d)) {
                (Role::Server { .. }, Some(s)) if s.kind == KIND_OFFER => {
                    if self.on_offer(from, s, d.len()).is_none() {
                        self.count(|s| s.offers_dropped += 1);
                    }
                }
                (Role::Client { answer, answered, .. }, Some(s)) if s.kind == KIND_ANSWER => {
                    *answer.borrow_mut() = Some(s);
                    answered.notify();
                }
                (Role::Client { busy, answered, .. }, None) if d.get(1) == Some(&KIND_BUSY) => {
                    if let Some(b) = Busy::decode(d) {
                        busy.set(Some(b));
                        answered.notify();
                    }
                }
                _ => self.count(|s| s.offers_dropped += 1),
            }
            return;
        }
        self.deliver(from, None, datagram);
    }

    /// Hands `d` from `from` to its session: received on our socket (`relayed` is `None`)
    /// or through our TURN allocation whose relayed address is `relayed`.
    fn deliver(&self, from: SocketAddr, relayed: Option<SocketAddr>, d: BytesMut) {
        let key = self.routes.borrow().get(&from).copied();
        let key = key.or_else(|| self.peer_reflexive(from, &d)).unwrap_or(from);
        let ch = self.channels.borrow().get(&key).cloned();
        let Some(ch) = ch else {
            self.count(|s| s.strays += 1);
            return;
        };
        if relayed.is_some() {
            // The server let it in, so a permission for the peer's IP exists; `rtc`'s
            // client also wants one for this exact address before it sends to it.
            if let Some(t) = self.turn.borrow_mut().as_mut() {
                t.permit(clock::now(), from);
            }
        }
        let msg = TaggedBytesMut {
            now: clock::now(),
            transport: TransportContext {
                local_addr: relayed.unwrap_or(ch.local),
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: d,
        };
        // A datagram the connection refuses (bad DTLS record, STUN without integrity) is
        // dropped by it; only its own state decides whether the connection goes on.
        let _ = ch.pc.borrow_mut().handle_read(msg);
        self.mark(&ch);
    }

    /// A connectivity check from an address no session knows: the session whose ICE
    /// username fragment it names (RFC 8445 §7.3.1.3, a peer-reflexive candidate: the
    /// peer's NAT gave it another port toward us than toward the STUN server). Routes
    /// `from` to it, at most `PEER_REFLEXIVE_ROUTES_MAX` addresses per session; the ICE
    /// agent still checks the message's integrity.
    fn peer_reflexive(&self, from: SocketAddr, d: &[u8]) -> Option<SocketAddr> {
        let user = super::stun::username(d)?;
        let ours = user.split(|b| *b == b':').next()?;
        let key = self
            .channels
            .borrow()
            .iter()
            .find(|(_, ch)| !ch.ufrag.is_empty() && ch.ufrag.as_bytes() == ours)
            .map(|(k, _)| *k)?;
        let mut routes = self.routes.borrow_mut();
        if routes.values().filter(|k| **k == key).count() >= PEER_REFLEXIVE_ROUTES_MAX {
            return None;
        }
        routes.insert(from, key);
        Some(key)
    }

    /// Answers an offer from `from` (a datagram of `offer_len` bytes); `None` drops it.
    fn on_offer(&self, from: SocketAddr, offer: Signal, offer_len: usize) -> Option<()> {
        let existing = self.channels.borrow().get(&from).cloned();
        if let Some(ch) = existing {
            if ch.nonce == offer.nonce {
                // A retransmitted offer: the answer was lost.
                let answer = ch.answer.borrow().clone()?;
                self.outbox.borrow_mut().push_back((from, answer));
                return Some(());
            }
        }
        if offer_len < WEBRTC_OFFER_MIN_BYTES {
            return None;
        }
        if let Role::Server { handshakes_max, .. } = &self.role {
            let mut waiting = self.waiting.borrow_mut();
            if self.connecting.get() >= *handshakes_max || !waiting.is_empty() {
                // No session, no SDP parsed: 20 bytes back, and the offer waits its turn
                // (its sender offers again, which keeps its place).
                let nonce = offer.nonce;
                let now = clock::now();
                match waiting.iter().position(|w| w.from == from) {
                    Some(i) => waiting[i] = Waiting { from, offer, offer_len, seen: now },
                    None if waiting.len() < WAITING_MAX => {
                        waiting.push_back(Waiting { from, offer, offer_len, seen: now });
                    }
                    None => {}
                }
                drop(waiting);
                let busy = Busy {
                    nonce,
                    retry_ms: WEBRTC_BUSY_RETRY_MS as u32,
                    settled: self.settled.get(),
                };
                self.outbox.borrow_mut().push_back((from, busy.encode()));
                self.count(|s| s.offers_busy += 1);
                self.wake.notify();
                return Some(());
            }
        }
        self.admit(from, offer, offer_len)
    }

    /// Sets up a session for the oldest waiting offers while set-up slots are free; an
    /// offer not offered again within `WAITING_STALE` is dropped (its sender is gone).
    fn admit_waiting(&self, now: Instant) {
        let Role::Server { handshakes_max, .. } = &self.role else { return };
        while self.connecting.get() < *handshakes_max {
            let next = self.waiting.borrow_mut().pop_front();
            let Some(w) = next else { return };
            if now.saturating_duration_since(w.seen) > WAITING_STALE {
                continue;
            }
            if self.admit(w.from, w.offer, w.offer_len).is_none() {
                self.count(|s| s.offers_dropped += 1);
            }
        }
    }

    /// Sets up a session for the offer from `from` (a datagram of `offer_len` bytes) and
    /// queues its answer; `None` drops it.
    fn admit(&self, from: SocketAddr, offer: Signal, offer_len: usize) -> Option<()> {
        let (ch, sdp, _) = self.open_session(from, offer.sdp, offer.nonce, &[], None)?;
        let datagram = Signal { kind: KIND_ANSWER, nonce: offer.nonce, sdp }.encode(0)?;
        // Never more bytes back than came in: no amplification toward a spoofed source.
        if datagram.len() > offer_len {
            ch.close();
            self.settle(&ch, false);
            self.channels.borrow_mut().remove(&from);
            return None;
        }
        *ch.answer.borrow_mut() = Some(datagram.clone());
        self.outbox.borrow_mut().push_back((from, datagram));
        Some(())
    }

    /// Answers an offer that came through the DHT, already authenticated and opened
    /// (`crypto::signal`): a session with the peer whose ICE candidates (RFC 8445 §5.1.1)
    /// are `candidates`. Returns the answer's SDP and this endpoint's own candidates (host,
    /// server-reflexive when its STUN servers gave a mapped address, relayed when its TURN
    /// server gave an allocation), or `None`
    /// (no candidate, malformed SDP, shard full, a live session with that peer).
    pub(in crate::node) fn answer_signaled(
        &self,
        candidates: &[SignalCandidate],
        offer_sdp: String,
    ) -> Option<(String, Vec<SignalCandidate>)> {
        // The peer's key: its most outside address (a server-reflexive one if it has one),
        // so two peers behind different NATs with the same private address stay apart.
        let key = session_key(candidates)?;
        let (_, sdp, ours) =
            self.open_session(key, offer_sdp, clock::random(), candidates, None)?;
        self.wake.notify();
        Some((sdp, ours))
    }

    /// Answers a browser's offer that came over the node's own HTTP gateway from `client`:
    /// a browser session (plaintext peer wire inside DTLS, no node handshake). Its mDNS
    /// host candidates (`….local`, which name no address we could use) are dropped from the
    /// offer; its checks then arrive from its real address and are routed by the ICE
    /// username fragment they name (peer-reflexive). Keyed by an address in the
    /// discard-only prefix `100::/64` (RFC 6666), which no datagram comes from. Returns the
    /// answer's SDP (with our candidates and DTLS fingerprint) and our candidates, or
    /// `None` (malformed SDP, shard full). The offer came over our own gateway, or from a
    /// node that serves the browser's page and signed that it is a browser's (relayed
    /// through the DHT, `crypto::signal`).
    pub(in crate::node) fn answer_browser(
        &self,
        offer_sdp: &str,
        client: IpAddr,
    ) -> Option<(String, Vec<SignalCandidate>)> {
        let n = self.browser_keys.get().wrapping_add(1);
        self.browser_keys.set(n);
        let key = SocketAddr::new(
            IpAddr::V6(std::net::Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16)),
            1,
        );
        let sdp = without_mdns_candidates(offer_sdp);
        let (_, sdp, ours) = self.open_session(key, sdp, clock::random(), &[], Some(client))?;
        self.wake.notify();
        Some((sdp, ours))
    }

    /// A server-side session for an offer from `from`: sets the offer, adds our candidates
    /// (host, and server-reflexive with STUN) and the peer's signaled `remote` ones (each
    /// routed to this session), creates the answer. Counts it; `None` (counted by the
    /// caller) drops the offer. `browser`: a browser's session keyed by the synthetic
    /// `from`, whose client has this IP (it names the route to the browser).
    fn open_session(
        &self,
        from: SocketAddr,
        offer_sdp: String,
        nonce: u64,
        remote: &[SignalCandidate],
        browser: Option<IpAddr>,
    ) -> Option<(Rc<Channel>, String, Vec<SignalCandidate>)> {
        let Role::Server { channels_max, open_timeout, .. } = &self.role else { return None };
        let existing = self.channels.borrow().get(&from).cloned();
        if let Some(ch) = existing {
            if ch.state.get() != State::Closed {
                return None;
            }
            self.settle(&ch, false);
            self.channels.borrow_mut().remove(&from);
        }
        if self.channels.borrow().len() >= *channels_max {
            return None;
        }
        let now = clock::now();
        let toward = browser.map_or(from, |ip| SocketAddr::new(ip, 9));
        let ip = if self.bound.ip().is_unspecified() { route_ip(toward)? } else { self.bound.ip() };
        let local = SocketAddr::new(ip, self.bound.port());
        let ours = local_candidates(local, self.mapped(), self.relayed());
        let pc = match browser {
            Some(_) => browser_peer_connection(now, self.block),
            None => {
                // Every path is loopback: an offer by datagram came from its one path, a
                // signaled one names them all (none a relay's), and we offer no relay.
                let loopback = self.relayed().is_none()
                    && if remote.is_empty() {
                        is_loopback(from.ip())
                    } else {
                        remote
                            .iter()
                            .all(|c| c.kind != CandidateKind::Relayed && is_loopback(c.addr.ip()))
                    };
                new_peer_connection(now, loopback, self.block)
            }
        };
        let mut pc = pc.ok()?;
        let desc = RTCSessionDescription::offer(offer_sdp).ok()?;
        pc.set_remote_description(now, desc).ok()?;
        add_local_candidates(&mut pc, &ours).ok()?;
        add_remote_candidates(&mut pc, remote).ok()?;
        let answer = pc.create_answer(None).ok()?;
        pc.set_local_description(now, answer.clone()).ok()?;
        let sdp = pc.local_description().map(|d| d.sdp).unwrap_or(answer.sdp);
        let peer = browser.map_or(from, |ip| SocketAddr::new(ip, 0));
        let ufrag = ice_ufrag(&sdp);
        let ch = Rc::new(Channel {
            nonce,
            browser: browser.is_some(),
            ..Channel::new(pc, (local, peer, from), now + *open_timeout, ufrag)
        });
        self.channels.borrow_mut().insert(from, ch.clone());
        ch.counted.set(true);
        self.connecting.set(self.connecting.get() + 1);
        self.mark(&ch);
        self.route(from, remote);
        self.permit(remote);
        self.count(|s| s.offers += 1);
        Some((ch, sdp, ours))
    }

    /// Once `ch` is no longer connecting (opened, or closed: `timed_out` at its open
    /// deadline, else failed), takes it off the set-ups in progress and counts how its
    /// set-up ended. Idempotent; a client's channel is never counted.
    fn settle(&self, ch: &Channel, timed_out: bool) {
        if !ch.counted.get() || ch.state.get() == State::Connecting {
            return;
        }
        ch.counted.set(false);
        self.connecting.set(self.connecting.get().saturating_sub(1));
        self.settled.set(self.settled.get().wrapping_add(1));
        let (ice, dtls) = (ch.ice_connected.get(), ch.dtls_connected.get());
        let open = ch.state.get() == State::Open;
        let ms = clock::now().saturating_duration_since(ch.created).as_millis() as u64;
        self.count(|s| {
            s.ice_connected += u64::from(ice);
            s.dtls_connected += u64::from(dtls);
            if open {
                s.opened += 1;
                s.open_ms_total += ms;
            } else if timed_out {
                s.open_timeouts += 1;
            } else {
                s.open_failures += 1;
            }
        });
    }

    /// Routes datagrams from each of `candidates`' addresses to the session keyed `key`.
    fn route(&self, key: SocketAddr, candidates: &[SignalCandidate]) {
        let mut routes = self.routes.borrow_mut();
        for c in candidates.iter().take(SIGNAL_CANDIDATES_MAX) {
            if c.addr != key {
                routes.insert(c.addr, key);
            }
        }
    }

    /// Sends what is queued, fires timers, fills inboxes; sleeps until the next deadline or
    /// wake-up. Each round handles only the connections on the `ready` list (a datagram
    /// came, their stream read or wrote, their timer is due), so a round costs what
    /// happened, not the number of connections. Returns only on a client endpoint, once
    /// its connection is gone.
    async fn drive(self: &Rc<Self>) {
        let mut batch = Batch::default();
        loop {
            loop {
                // The borrow ends before the send's await (the receiver queues answers).
                let next = self.outbox.borrow_mut().pop_front();
                let Some((to, d)) = next else { break };
                self.queue(&mut batch, to, BytesMut::from(&d[..])).await;
            }
            let now = clock::now();
            if let Some(t) = self.turn.borrow_mut().as_mut() {
                if t.poll_timeout().is_some_and(|t| t <= now) {
                    t.handle_timeout(now);
                }
            }
            self.due(now);
            let ready = std::mem::take(&mut *self.ready.borrow_mut());
            let relayed = self.relayed();
            for ch in ready {
                ch.ready.set(false);
                self.visit(&ch, now, relayed, &mut batch).await;
            }
            // Slots the round freed go to the offers waiting longest.
            self.admit_waiting(now);
            loop {
                let d = self.turn.borrow_mut().as_mut().and_then(TurnRelay::poll_transmit);
                let Some((to, d)) = d else { break };
                self.queue(&mut batch, to, d).await;
            }
            self.flush(&mut batch).await;
            if !self.outbox.borrow().is_empty() || !self.ready.borrow().is_empty() {
                continue;
            }
            if matches!(self.role, Role::Client { .. }) && self.channels.borrow().is_empty() {
                // Gone: the allocation goes too (RFC 8656 §7.2), not left to expire.
                let turn = self.turn.borrow_mut().take();
                if let Some(mut t) = turn {
                    t.release(clock::now());
                    while let Some((to, d)) = t.poll_transmit() {
                        let _ = self.socket.send_to(&d, to).await;
                    }
                }
                return;
            }
            let t = self.turn.borrow_mut().as_mut().and_then(TurnRelay::poll_timeout);
            let next = match (self.due(clock::now()), t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !self.ready.borrow().is_empty() {
                continue;
            }
            match next {
                Some(t) => {
                    let sleep = glommio::timer::sleep(t.saturating_duration_since(clock::now()));
                    future::or(sleep, self.wake.notified()).await;
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// One connection's turn in a driver round: closes it if abandoned or past its open
    /// deadline, fires its due timers, hands an opened channel to `accept`, queues what it
    /// wants sent (through the TURN server when from our `relayed` address), drops it once
    /// closed, and schedules its next visit.
    async fn visit(
        self: &Rc<Self>,
        ch: &Rc<Channel>,
        now: Instant,
        relayed: Option<SocketAddr>,
        batch: &mut Batch,
    ) {
        let expired = ch.state.get() == State::Connecting && now >= ch.open_deadline.get();
        if ch.abandoned.get() || expired {
            ch.close();
        }
        let due = ch.pc.borrow_mut().poll_timeout().is_some_and(|t| t <= now);
        if due {
            let _ = ch.pc.borrow_mut().handle_timeout(now);
        }
        if ch.pump() {
            if let Role::Server { accepted, acceptor, .. } = &self.role {
                accepted.borrow_mut().push_back(RtcStream::new(self.clone(), ch.clone()));
                Channel::wake(acceptor);
            }
        }
        self.settle(ch, expired);
        loop {
            let out = ch.pc.borrow_mut().poll_write();
            let Some(out) = out else { break };
            if relayed.is_some_and(|r| r == out.transport.local_addr) {
                // From our relayed candidate: through the TURN server.
                if let Some(t) = self.turn.borrow_mut().as_mut() {
                    t.send(now, out.transport.peer_addr, &out.message);
                }
                continue;
            }
            self.queue(batch, out.transport.peer_addr, out.message).await;
        }
        if ch.state.get() == State::Closed {
            let mut channels = self.channels.borrow_mut();
            if channels.get(&ch.key).is_some_and(|c| Rc::ptr_eq(c, ch)) {
                channels.remove(&ch.key);
                self.routes.borrow_mut().retain(|_, key| *key != ch.key);
            }
            return;
        }
        let mut t = ch.pc.borrow_mut().poll_timeout();
        if ch.state.get() == State::Connecting {
            let open_deadline = ch.open_deadline.get();
            t = Some(t.map_or(open_deadline, |t| t.min(open_deadline)));
        }
        if let Some(t) = t {
            self.schedule(ch, t);
        }
    }
}

/// Opens a data channel to the seeder endpoint at `peer` from a socket of its own (bound
/// and connected toward `peer` by the caller): sends the offer (again every
/// `WEBRTC_OFFER_RETRY_MS` until answered), applies the answer, adds `peer` as the remote
/// host candidate and waits for the channel to open. A seeder shard that answers "busy"
/// (admission control) is offered to again after the pause it asks for, for as long as its
/// busy answers say that its set-ups move on; `timeout` counts from the last sign of that
/// (or from the start, with no answer at all), then from the answer to the open
/// (`TimedOut` when either runs out). The returned stream owns the endpoint's task.
pub(in crate::node) async fn connect(
    socket: UdpSocket,
    peer: SocketAddr,
    timeout: Duration,
) -> io::Result<RtcStream> {
    let role = Role::Client {
        answer: RefCell::default(),
        busy: Cell::default(),
        answered: Notify::default(),
    };
    // A downloader writes only requests: the default block size is plenty.
    let ep = Endpoint::new(socket, role, WEBRTC_BLOCK_BYTES)?;
    let local = ep.bound;
    let now = clock::now();
    let (pc, dc, sdp) = offering_connection(&local_candidates(local, None, None), now)?;
    let ufrag = ice_ufrag(&sdp);
    let nonce: u64 = clock::random();
    let datagram = Signal { kind: KIND_OFFER, nonce, sdp }
        .encode(WEBRTC_OFFER_MIN_BYTES)
        .ok_or_else(|| rtc_io("offer too large for one datagram"))?;
    let ch = Rc::new(Channel {
        dc: Cell::new(Some(dc)),
        nonce,
        ..Channel::new(pc, (local, peer, peer), now + timeout, ufrag)
    });
    ep.channels.borrow_mut().insert(peer, ch.clone());
    ep.mark(&ch);
    let task = glommio::spawn_local(ep.clone().run());
    let stream = RtcStream { ep: ep.clone(), ch: ch.clone(), task: Some(task) };
    let Role::Client { answer, busy, answered } = &ep.role else {
        return Err(rtc_io("not a client endpoint"));
    };
    // The last sign of progress (the start, or a busy answer whose settled count moved) and
    // the settled count it carried; when the offer goes (again).
    let (mut progress, mut settled, mut offer_at) = (now, None, now);
    let answer = loop {
        let now = clock::now();
        let give_up = progress + timeout;
        if now >= give_up {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if now >= offer_at {
            // Again and again until answered: UDP may lose either datagram.
            ep.outbox.borrow_mut().push_back((peer, datagram.clone()));
            ep.wake.notify();
            offer_at = now + Duration::from_millis(WEBRTC_OFFER_RETRY_MS);
        }
        // The driver closes the channel at its open deadline: not while we still wait.
        ch.open_deadline.set(give_up.max(offer_at));
        let wait = offer_at.min(give_up).saturating_duration_since(now);
        future::or(answered.notified(), glommio::timer::sleep(wait)).await;
        if let Some(a) = answer.borrow_mut().take().filter(|a| a.nonce == nonce) {
            break a;
        }
        if let Some(b) = busy.take().filter(|b| b.nonce == nonce) {
            // Not admitted: offer again after the pause asked for (1-2x, at random).
            if settled != Some(b.settled) {
                (progress, settled) = (clock::now(), Some(b.settled));
            }
            let ask = u64::from(b.retry_ms).min(BUSY_PAUSE_MAX_MS);
            let pause = Duration::from_millis(ask).mul_f64(1.0 + clock::random::<f64>());
            offer_at = clock::now() + pause;
        }
    };
    {
        let now = clock::now();
        // The set-up starts now: the open deadline counts from the answer.
        ch.open_deadline.set(now + timeout);
        let mut pc = ch.pc.borrow_mut();
        let desc = RTCSessionDescription::answer(answer.sdp).map_err(rtc_io)?;
        pc.set_remote_description(now, desc).map_err(rtc_io)?;
        // The answer's own candidates may name an address we cannot reach; the address the
        // answer came from is the one we know works.
        pc.add_remote_candidate(host_candidate(peer)?).map_err(rtc_io)?;
    }
    ep.touch(&ch);
    // The driver closes the channel at `open_deadline` if it has not opened.
    wait_open(&ch).await?;
    Ok(stream)
}

/// Opens a data channel to a node reached through the DHT: `signal` carries our offer (SDP
/// and our candidates, RFC 8445 §5.1.1: host; server-reflexive when one of the `stun`
/// servers answers within `WEBRTC_STUN_WAIT_MS`; relayed when the `turn` server gives an
/// allocation within `WEBRTC_TURN_WAIT_MS`) to the node and returns its answer and its
/// candidates, authenticated (`crypto::signal`: the DTLS fingerprint in the answer is the
/// one the node signed). `socket` must be bound to a concrete IP (it names our host
/// candidate). Gives up after `timeout` (`TimedOut`), signaling included.
pub(in crate::node) async fn connect_signaled<F, Fut>(
    socket: UdpSocket,
    (stun, turn): (&[SocketAddr], Option<&TurnServer>),
    timeout: Duration,
    signal: F,
) -> io::Result<RtcStream>
where
    F: FnOnce(String, Vec<SignalCandidate>) -> Fut,
    Fut: std::future::Future<Output = io::Result<(String, Vec<SignalCandidate>)>>,
{
    let local = socket.local_addr().map_err(super::super::glommio_io)?;
    if local.ip().is_unspecified() {
        return Err(rtc_io("a signaled connection needs a socket bound to a concrete IP"));
    }
    let relay = match turn {
        Some(server) => match TurnRelay::new(server, local, clock::now()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("turn {}: {e}", server.addr);
                None
            }
        },
        None => None,
    };
    let (mapped, relay) = gather(&socket, StunClient::new(stun), relay).await;
    let role = Role::Client {
        answer: RefCell::default(),
        busy: Cell::default(),
        answered: Notify::default(),
    };
    let ep = Endpoint::new(socket, role, WEBRTC_BLOCK_BYTES)?;
    *ep.turn.borrow_mut() = relay.filter(|r| r.relayed().is_some());
    let now = clock::now();
    let deadline = now + timeout;
    let ours = local_candidates(local, mapped, ep.relayed());
    let (mut pc, dc, sdp) = offering_connection(&ours, now)?;
    let ufrag = ice_ufrag(&sdp);
    let exchange = async { Some(signal(sdp, ours).await) };
    let expire = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    let (answer, theirs) = future::or(exchange, expire)
        .await
        .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))??;
    let remote = theirs
        .iter()
        .find(|c| c.kind != CandidateKind::Relayed)
        .or(theirs.first())
        .ok_or_else(|| rtc_io("the answer names no candidate we can use"))?
        .addr;
    let now = clock::now();
    let desc = RTCSessionDescription::answer(answer).map_err(rtc_io)?;
    pc.set_remote_description(now, desc).map_err(rtc_io)?;
    add_remote_candidates(&mut pc, &theirs)?;
    let open_deadline = deadline.max(now + Duration::from_millis(WEBRTC_OFFER_RETRY_MS));
    let ch = Rc::new(Channel {
        dc: Cell::new(Some(dc)),
        ..Channel::new(pc, (local, remote, remote), open_deadline, ufrag)
    });
    ep.channels.borrow_mut().insert(remote, ch.clone());
    ep.route(remote, &theirs);
    ep.permit(&theirs);
    let task = glommio::spawn_local(ep.clone().run());
    let stream = RtcStream { ep: ep.clone(), ch: ch.clone(), task: Some(task) };
    ep.touch(&ch);
    wait_open(&ch).await?;
    Ok(stream)
}

/// Gathers `socket`'s candidates before its offer, STUN and TURN at once: asks `stun`'s
/// servers for the mapped address (again every `WEBRTC_STUN_RETRY_MS`, for at most
/// `WEBRTC_STUN_WAIT_MS`) and lets `turn` allocate (its own retransmissions, for at most
/// `WEBRTC_TURN_WAIT_MS`). Returns the mapped address (`None` if no server answered) and the
/// relay (allocated, failed or still allocating: the caller asks). Runs before the socket
/// has a session, so a datagram lost with a cancelled receive (glommio's is not
/// cancel-safe) can only be a STUN or TURN answer, and the requests are retransmitted.
async fn gather(
    socket: &UdpSocket,
    mut stun: Option<StunClient>,
    mut turn: Option<TurnRelay>,
) -> (Option<SocketAddr>, Option<TurnRelay>) {
    let start = clock::now();
    let wait = |ms: u64, on: bool| if on { Duration::from_millis(ms) } else { Duration::ZERO };
    let deadline = start
        + wait(WEBRTC_STUN_WAIT_MS, stun.is_some()).max(wait(WEBRTC_TURN_WAIT_MS, turn.is_some()));
    let mapped = |stun: &Option<StunClient>| stun.as_ref().and_then(StunClient::mapped);
    let done = |stun: &Option<StunClient>, turn: &Option<TurnRelay>| {
        (stun.is_none() || mapped(stun).is_some()) && turn.as_ref().is_none_or(TurnRelay::settled)
    };
    let mut buf = vec![0u8; 2048];
    let mut stun_round = start;
    while !done(&stun, &turn) && clock::now() < deadline {
        let now = clock::now();
        if let Some(client) = stun.as_mut().filter(|c| c.mapped().is_none()) {
            if now >= stun_round {
                for (to, d) in client.requests(clock::random) {
                    let _ = socket.send_to(&d, to).await;
                }
                stun_round = now + Duration::from_millis(WEBRTC_STUN_RETRY_MS);
            }
        }
        let mut wake = deadline.min(if mapped(&stun).is_none() && stun.is_some() {
            stun_round
        } else {
            deadline
        });
        if let Some(t) = turn.as_mut() {
            if t.poll_timeout().is_some_and(|t| t <= now) {
                t.handle_timeout(now);
            }
            while let Some((to, d)) = t.poll_transmit() {
                let _ = socket.send_to(&d, to).await;
            }
            if let Some(at) = t.poll_timeout().filter(|_| !t.settled()) {
                wake = wake.min(at);
            }
        }
        let left = wake.saturating_duration_since(clock::now());
        let recv = async { Some(socket.recv_from(&mut buf).await) };
        let expire = async {
            glommio::timer::sleep(left).await;
            None
        };
        if let Some(Ok((n, from))) = future::or(recv, expire).await {
            let d = &buf[..n];
            if stun.as_mut().is_some_and(|c| c.handle(from, d)) {
                continue;
            }
            if let Some(t) = turn.as_mut().filter(|t| t.server() == from) {
                // No session yet: nothing relayed can be for us.
                let _ = t.handle(clock::now(), d);
            }
        }
    }
    (mapped(&stun), turn)
}

/// Waits until `ch` opens (the driver closes it at its `open_deadline` if it does not).
/// `TimedOut` when the deadline passed while it was still connecting (a busy or starved
/// peer: worth trying again); `ConnectionAborted` when ICE or DTLS failed before it (no
/// path, or a certificate that does not match the signed fingerprint: not worth a retry).
async fn wait_open(ch: &Channel) -> io::Result<()> {
    future::poll_fn(|cx| match ch.state.get() {
        State::Open => Poll::Ready(Ok(())),
        State::Closed if clock::now() >= ch.open_deadline.get() => {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "webrtc: the data channel did not open in time (ICE or DTLS did not finish)",
            )))
        }
        State::Closed => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "webrtc: the data channel did not open (ICE or DTLS failed)",
        ))),
        State::Connecting => {
            *ch.writer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

/// An open data channel read and written as a byte stream ([`AsyncRead`] + [`AsyncWrite`]),
/// so the node's handshake and records run on it as on a TCP stream. Dropping it closes the
/// peer connection.
pub(in crate::node) struct RtcStream {
    ep: Rc<Endpoint>,
    ch: Rc<Channel>,
    /// The client endpoint's task, detached when the stream goes: it closes the connection
    /// (the peer hears of it) and ends. None on a server.
    task: Option<glommio::Task<()>>,
}

impl RtcStream {
    fn new(ep: Rc<Endpoint>, ch: Rc<Channel>) -> Self {
        Self { ep, ch, task: None }
    }

    /// The peer's address.
    pub(in crate::node) fn peer_addr(&self) -> SocketAddr {
        self.ch.remote
    }

    /// The candidate types of the pair ICE selected, `LOCAL-REMOTE` (e.g. `srflx-srflx`,
    /// `host-host`; RFC 8445 §5.1.1), or `None` if it has not reported one.
    pub(in crate::node) fn ice_pair(&self) -> Option<String> {
        self.ch.ice_pair()
    }

    /// Whether this is a browser's session (its offer came over the node's own HTTP), to
    /// be served with the plaintext peer wire and no node handshake.
    pub(in crate::node) fn is_browser(&self) -> bool {
        self.ch.browser
    }

    /// The channel binding of this session's DTLS (`crypto::handshake`, "Channel binding"):
    /// from the SHA-256 of our certificate (the fingerprint in our own session description)
    /// and of the certificate the peer presented (which DTLS accepted only because it
    /// matches the fingerprint in the peer's description), the handshake initiator's (the
    /// offerer's, a client endpoint's) first. An error if DTLS has not given a certificate.
    pub(in crate::node) fn channel_binding(&self) -> io::Result<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let pc = self.ch.pc.borrow();
        let local = pc
            .local_description()
            .and_then(|d| sdp_sha256_fingerprint(&d.sdp))
            .ok_or_else(|| rtc_io("no SHA-256 fingerprint in our own session description"))?;
        let remote: [u8; 32] = pc
            .sctp()
            .and_then(|s| s.transport().get_remote_certificates().first().map(Sha256::digest))
            .ok_or_else(|| rtc_io("DTLS gave no peer certificate"))?
            .into();
        Ok(match self.ep.role {
            Role::Client { .. } => dtls_channel_binding(&local, &remote),
            Role::Server { .. } => dtls_channel_binding(&remote, &local),
        })
    }

    /// The block size writes are cut into (message size on the channel), in bytes.
    fn block(&self) -> usize {
        self.ep.block
    }

    /// Sends one message of the first `min(len, block)` bytes of what the caller has
    /// (`message(n)` makes it), or waits: while the channel is not open yet, or while SCTP
    /// holds `WEBRTC_SEND_BUFFER_BYTES` unacknowledged (back-pressure; the driver wakes the
    /// writer below half of it). Ready with the bytes sent; `BrokenPipe` once closed.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        len: usize,
        message: impl FnOnce(usize) -> BytesMut,
    ) -> Poll<io::Result<usize>> {
        let ch = &self.ch;
        if ch.state.get() == State::Closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = len.min(self.block());
        let mut pc = ch.pc.borrow_mut();
        let Some(mut dc) = ch.dc.get().and_then(|id| pc.data_channel(id)) else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        if ch.state.get() != State::Open || dc.outstanding_bytes() >= WEBRTC_SEND_BUFFER_BYTES {
            *ch.writer.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        dc.send(clock::now(), message(n)).map_err(rtc_io)?;
        drop(pc);
        self.ep.touch(&self.ch);
        Poll::Ready(Ok(n))
    }

    /// Writes all of `data` as messages cut from it without copying (`rtc` keeps each
    /// until SCTP has it acknowledged, then frees it), where [`AsyncWrite::poll_write`]
    /// copies a borrowed buffer into each message. Same messages, same back-pressure.
    pub(in crate::node) async fn write_owned(&self, mut data: BytesMut) -> io::Result<()> {
        future::poll_fn(|cx| {
            while !data.is_empty() {
                let len = data.len();
                match self.poll_send(cx, len, |n| data.split_to(n)) {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }
}

impl Drop for RtcStream {
    fn drop(&mut self) {
        self.ch.abandoned.set(true);
        self.ep.touch(&self.ch);
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

impl AsyncRead for RtcStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let ch = &self.ch;
        let mut inbox = ch.inbox.borrow_mut();
        let Some(front) = inbox.front() else {
            if ch.state.get() == State::Closed {
                return Poll::Ready(Ok(0));
            }
            *ch.reader.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let off = ch.read_offset.get();
        let n = buf.len().min(front.len() - off);
        buf[..n].copy_from_slice(&front[off..off + n]);
        if off + n == front.len() {
            inbox.pop_front();
            ch.read_offset.set(0);
        } else {
            ch.read_offset.set(off + n);
        }
        let before = ch.inbox_bytes.get();
        ch.inbox_bytes.set(before - n);
        drop(inbox);
        // Room again in the inbox: let the driver take more from SCTP.
        if before >= WEBRTC_RECV_BUFFER_BYTES && ch.inbox_bytes.get() < WEBRTC_RECV_BUFFER_BYTES {
            self.ep.touch(&self.ch);
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for RtcStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ch = &self.ch;
        if ch.state.get() == State::Closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_send(cx, buf.len(), |n| BytesMut::from(&buf[..n]))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Messages are in SCTP's hands once sent; the driver puts them on the wire.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ch.abandoned.set(true);
        self.ep.touch(&self.ch);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_a_run_of_one_size_to_one_destination() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut batch = Batch::default();
        let d = |byte: u8, n: usize| BytesMut::from(&vec![byte; n][..]);
        assert!(batch.push(a, d(1, 1200)).is_ok());
        assert!(batch.push(a, d(2, 1200)).is_ok());
        // Another destination, a larger datagram: not part of the run, handed back.
        assert_eq!(batch.push(b, d(3, 1200)), Err(d(3, 1200)));
        assert!(batch.push(a, d(3, 1201)).is_err());
        // A shorter one ends it.
        assert!(batch.push(a, d(4, 100)).is_ok());
        assert!(batch.push(a, d(5, 100)).is_err());
        assert_eq!((batch.datagrams.len(), batch.segment, batch.len), (3, 1200, 2500));
        assert_eq!(batch.datagrams[2], d(4, 100));
        // Nothing UDP could carry is dropped, never batched.
        assert!(batch.push(a, BytesMut::new()).is_ok());
        assert!(batch.push(a, d(0, UDP_BATCH_MAX_BYTES + 1)).is_ok());
        assert_eq!(batch.datagrams.len(), 3);
        batch.clear();
        assert!(batch.is_empty() && batch.to.is_none() && batch.len == 0);
        // At most UDP_SEGMENTS_MAX datagrams and UDP_BATCH_MAX_BYTES bytes.
        for _ in 0..UDP_SEGMENTS_MAX {
            assert!(batch.push(b, d(0, 100)).is_ok());
        }
        assert!(batch.push(b, d(0, 100)).is_err());
        batch.clear();
        assert!(batch.push(b, d(0, 30_000)).is_ok());
        assert!(batch.push(b, d(0, 30_000)).is_ok());
        assert!(batch.push(b, d(0, 30_000)).is_err());
    }

    #[test]
    fn only_loopback_addresses_count_as_loopback_paths() {
        for ip in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "192.168.1.1", "0.0.0.0", "::", "fe80::1", "::ffff:10.0.0.1"] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_sha256_fingerprint_is_read_from_a_description() {
        let fp = (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":");
        let sdp = format!(
            "v=0\r\na=fingerprint:sha-1 00:11\r\na=fingerprint:sha-256 {fp}\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=fingerprint:SHA-256 {fp}\r\n"
        );
        let want: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(sdp_sha256_fingerprint(&sdp), Some(want));
        // None, a short one, a malformed one, two that differ: no fingerprint.
        assert_eq!(sdp_sha256_fingerprint("v=0\r\n"), None);
        assert_eq!(sdp_sha256_fingerprint("a=fingerprint:sha-256 00:11\r\n"), None);
        let bad = fp.replacen("00", "0G", 1);
        assert_eq!(sdp_sha256_fingerprint(&format!("a=fingerprint:sha-256 {bad}\r\n")), None);
        let other = fp.replacen("00", "FF", 1);
        let two = format!("a=fingerprint:sha-256 {fp}\r\na=fingerprint:sha-256 {other}\r\n");
        assert_eq!(sdp_sha256_fingerprint(&two), None);
    }

    #[test]
    fn mdns_candidates_are_dropped_and_the_rest_kept() {
        let sdp = "v=0\r\na=ice-ufrag:ab\r\n\
                   a=candidate:1 1 udp 2113937151 5f1c-aa.local 50000 typ host\r\n\
                   a=candidate:2 1 udp 2113937151 127.0.0.1 50001 typ host\r\n\
                   a=candidate:3 1 udp 1 X.LOCAL 5 typ host\r\n\
                   a=candidate:\r\na=end-of-candidates\r\n";
        let kept = without_mdns_candidates(sdp);
        assert_eq!(
            kept,
            "v=0\r\na=ice-ufrag:ab\r\n\
             a=candidate:2 1 udp 2113937151 127.0.0.1 50001 typ host\r\n\
             a=candidate:\r\na=end-of-candidates\r\n"
        );
        assert_eq!(without_mdns_candidates(""), "");
    }

    #[test]
    fn busy_answers_round_trip_are_small_and_never_taken_for_answers() {
        let b = Busy { nonce: 9, retry_ms: 200, settled: 70_000 };
        let d = b.encode();
        assert_eq!(d.len(), SIGNAL_HEADER_BYTES + BUSY_BODY_BYTES);
        // Far below the padded offer it answers: no amplification.
        assert!(d.len() * 50 < WEBRTC_OFFER_MIN_BYTES);
        assert_eq!(Busy::decode(&d), Some(b));
        // Not an answer or offer to the SDP parser, and nothing else is a busy answer.
        assert_eq!(Signal::decode(&d), None);
        for i in 0..d.len() {
            assert_eq!(Busy::decode(&d[..i]), None);
        }
        let mut longer = d.clone();
        longer.push(0);
        assert_eq!(Busy::decode(&longer), None);
        let offer = Signal { kind: KIND_OFFER, nonce: 9, sdp: "v=0\r\n".into() };
        assert_eq!(Busy::decode(&offer.encode(0).unwrap()), None);
    }

    #[test]
    fn signals_round_trip_and_hostile_ones_are_refused() {
        let s = Signal { kind: KIND_OFFER, nonce: 7, sdp: "v=0\r\n".into() };
        let d = s.encode(WEBRTC_OFFER_MIN_BYTES).unwrap();
        assert_eq!(d.len(), WEBRTC_OFFER_MIN_BYTES);
        assert_eq!(Signal::decode(&d), Some(s.clone()));
        // Truncated inside the SDP, an unknown kind, oversized, not UTF-8.
        assert_eq!(Signal::decode(&d[..SIGNAL_HEADER_BYTES + 2]), None);
        let mut bad = d.clone();
        bad[1] = 9;
        assert_eq!(Signal::decode(&bad), None);
        assert_eq!(Signal::decode(&vec![SIGNAL_MAGIC; WEBRTC_SIGNAL_MAX_BYTES + 1]), None);
        let mut bad = d;
        bad[SIGNAL_HEADER_BYTES] = 0xFF;
        assert_eq!(Signal::decode(&bad), None);
        // Every prefix of a valid datagram is refused or parsed, never a panic.
        let d = s.encode(0).unwrap();
        for i in 0..d.len() {
            let _ = Signal::decode(&d[..i]);
        }
    }
}
