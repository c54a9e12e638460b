//! Connection security on the I/O side: the node's identity on disk, its session key, and
//! the handshake on a byte stream.
//!
//! The protocol itself (messages, keys, records) is the sans-IO `crypto` module and the
//! byte layout (handshake frames, refusals, records) is `wire::frame`; this file only moves
//! handshake messages over a stream and hands the established `Session` to the transport.
//!
//! With `--encryption off` the same handshake runs (peers are still authenticated, pins
//! and network secrets still apply) and records are the plaintext frames of `wire`, with
//! no tags.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use super::clock::{self, now_unix};
use crate::config::SESSION_KEY_VALIDITY;
use crate::crypto::handshake::{Blame, HANDSHAKE_MESSAGE_BYTES_MAX};
use crate::crypto::{
    Encryption, HandshakeConfig, HandshakeError, HandshakeRandom, Identity, Initiator,
    NetworkSecret, NodeId, Responder, Session, SessionIdentity,
};
use crate::storage::layout;
use crate::wire::frame::{
    handshake_len, push_handshake, refusal, HandshakeFrame, RefusalCode, HANDSHAKE_PREFIX_BYTES,
};

/// Why the node identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    #[error("no node identity in {dir} (run `furymesh init`)")]
    Missing { dir: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Bad { path: PathBuf, source: crate::crypto::IdentityError },
    #[error("{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
}

/// Reads the node identity from `data_dir`. A key file that group or others can read is
/// refused, like ssh does.
pub fn load_identity(data_dir: &Path) -> Result<Identity, IdentityFileError> {
    use std::os::unix::fs::PermissionsExt;
    let path = layout::identity_path(data_dir);
    let io_err = |source| IdentityFileError::Io { path: path.clone(), source };
    let der = match fs::read(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(IdentityFileError::Missing { dir: data_dir.into() })
        }
        Err(e) => return Err(io_err(e)),
    };
    let mode = fs::metadata(&path).map_err(io_err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityFileError::Permissions { path, mode });
    }
    Identity::from_pkcs8_der(&der).map_err(|source| IdentityFileError::Bad { path, source })
}

/// Creates a new RSA-4096 identity in `data_dir` (mode 0600). Takes seconds. Never
/// replaces an existing key: the key is written to a private temporary file and linked
/// into place with `link(2)`, which fails if the name exists, so when several commands
/// create the identity of one data directory at once exactly one key wins and the others
/// load it. The flag says whether this call's key won.
fn create_identity(data_dir: &Path) -> Result<(Identity, bool), IdentityFileError> {
    let path = layout::identity_path(data_dir);
    let io_err = |source| IdentityFileError::Io { path: path.clone(), source };
    fs::create_dir_all(data_dir).map_err(io_err)?;
    let identity = Identity::generate(&mut clock::os_rng())
        .map_err(|source| IdentityFileError::Bad { path: path.clone(), source })?;
    let der = identity
        .to_pkcs8_der()
        .map_err(|source| IdentityFileError::Bad { path: path.clone(), source })?;
    // The temporary file is created with mode 0600, so the key is never readable by others,
    // not even for an instant; it is complete and on disk before its name appears.
    let mut tmp = tempfile::Builder::new()
        .prefix(".furymesh-tmp-identity")
        .tempfile_in(data_dir)
        .map_err(io_err)?;
    tmp.write_all(&der).and_then(|()| tmp.as_file().sync_all()).map_err(io_err)?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => {
            fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io_err)?;
            Ok((identity, true))
        }
        // Another command created it first: use that one, so the node has one ID.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            Ok((load_identity(data_dir)?, false))
        }
        Err(e) => Err(io_err(e.error)),
    }
}

/// Loads the identity, creating it first if the data directory has none (saying so on
/// stderr, since it takes a few seconds). The flag says whether it was created. Safe to
/// call from several processes at once: they all end up with the same identity.
pub fn load_or_create_identity(data_dir: &Path) -> Result<(Identity, bool), IdentityFileError> {
    match load_identity(data_dir) {
        Err(IdentityFileError::Missing { .. }) => {
            note!(
                "furymesh: creating the node identity (RSA-4096) in {}; this takes a few seconds",
                data_dir.display()
            );
            create_identity(data_dir)
        }
        other => other.map(|identity| (identity, false)),
    }
}

/// Header of a new known-peers file.
const KNOWN_PEERS_HEADER: &str =
    "# HOST:PORT NODE_ID — the node each peer proved when `furymesh get` first used it.\n\
     # Delete a line if that peer's identity changed on purpose (the last line for an \
     address counts).\n";

/// Trust on first use, remembered: the node ID each `HOST:PORT` proved the first time `get`
/// used it, in `DATA_DIR/known-peers` (`HOST:PORT NODE_ID` per line), like ssh's
/// known_hosts. A later `get` pins the address to that ID.
///
/// Several `get`s may share a data directory: the file is only ever appended to, under an
/// exclusive `flock`, after reading it again under that lock, so no command's pins are lost
/// and the first node seen at an address stays pinned. The last line for an address wins
/// (how an explicit `NODE_ID@HOST:PORT` replaces a pin).
#[derive(Debug, Default)]
pub struct KnownPeers {
    path: PathBuf,
    peers: BTreeMap<SocketAddr, NodeId>,
    /// Learned by this command and not saved yet: (address, ID, replaces an older pin).
    added: Vec<(SocketAddr, NodeId, bool)>,
}

impl KnownPeers {
    /// Reads `DATA_DIR/known-peers` (absent: empty). Lines that do not parse are reported on
    /// stderr and skipped, never fatal.
    pub fn load(data_dir: &Path) -> Self {
        let path = layout::known_peers_path(data_dir);
        let text = fs::File::open(&path)
            .and_then(|mut f| {
                crate::storage::lock_shared(&f)?;
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)?;
                Ok(bytes)
            })
            .unwrap_or_default();
        let peers = Self::parse(&path, &text, true);
        Self { path, peers, added: Vec::new() }
    }

    /// The pins in `text`, the last line for an address winning.
    fn parse(path: &Path, text: &[u8], report: bool) -> BTreeMap<SocketAddr, NodeId> {
        let mut peers = BTreeMap::new();
        for (n, line) in String::from_utf8_lossy(text).lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line.split_once(' ').and_then(|(a, id)| {
                Some((a.trim().parse().ok()?, id.trim().parse::<NodeId>().ok()?))
            });
            match parsed {
                Some((addr, id)) => {
                    peers.insert(addr, id);
                }
                None if report => note!(
                    "furymesh: {}:{}: not `HOST:PORT NODE_ID`, ignored",
                    path.display(),
                    n + 1
                ),
                None => {}
            }
        }
        peers
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node `addr` proved when first used, if it was.
    pub fn get(&self, addr: SocketAddr) -> Option<NodeId> {
        self.peers.get(&addr).copied()
    }

    /// Remembers `addr` as `id`: if it is new, or (`overwrite`, for an explicit
    /// `NODE_ID@HOST:PORT` that just succeeded) replacing what was known.
    pub fn remember(&mut self, addr: SocketAddr, id: NodeId, overwrite: bool) {
        let old = self.peers.get(&addr).copied();
        if old.is_none() || (overwrite && old != Some(id)) {
            self.peers.insert(addr, id);
            self.added.push((addr, id, overwrite));
        }
    }

    /// Appends what this command learned, under the file's exclusive lock and checked
    /// against the file as it is now: a pin another command saved meanwhile is kept (first
    /// use wins) unless this one is an explicit replacement.
    pub fn save(&self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if self.added.is_empty() {
            return Ok(());
        }
        let mut f = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&self.path)?;
        // Held until `f` is closed at the end of this function.
        crate::storage::lock_exclusive(&f)?;
        let mut text = Vec::new();
        f.read_to_end(&mut text)?;
        let now = Self::parse(&self.path, &text, false);
        let mut out = String::new();
        if text.is_empty() {
            out.push_str(KNOWN_PEERS_HEADER);
        } else if !text.ends_with(b"\n") {
            out.push('\n');
        }
        for &(addr, id, overwrite) in &self.added {
            match now.get(&addr) {
                Some(&known) if known == id => {}
                Some(_) if !overwrite => {}
                _ => out.push_str(&format!("{addr} {id}\n")),
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        f.write_all(out.as_bytes())?;
        f.sync_data()
    }
}

/// Reads a network secret file: its bytes without trailing whitespace (so a secret written
/// with or without a final newline is the same secret), at least
/// [`NetworkSecret::BYTES_MIN`] of them. `openssl rand -hex 32 > FILE` makes a good one.
pub fn read_network_secret(path: &Path) -> anyhow::Result<NetworkSecret> {
    let bytes = Zeroizing::new(
        fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
    );
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    NetworkSecret::from_bytes(&bytes[..end]).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Everything a node needs to secure its connections: the identity, the current session
/// key, the network secret and the encryption setting. Shared by every shard.
pub struct NodeSecurity {
    identity: Identity,
    session: Mutex<Arc<SessionIdentity>>,
    /// Where the session key is kept between commands (`DATA_DIR/session.key`), if anywhere.
    session_file: Option<PathBuf>,
    network: Option<NetworkSecret>,
    encryption: Encryption,
}

impl std::fmt::Debug for NodeSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSecurity")
            .field("node_id", &self.identity.node_id())
            .field("private_network", &self.network.is_some())
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

impl NodeSecurity {
    /// Certifies a session key with `identity` (the RSA key's one private operation).
    pub fn new(
        identity: Identity,
        network: Option<NetworkSecret>,
        encryption: Encryption,
    ) -> Result<Arc<Self>, crate::crypto::IdentityError> {
        let session = Arc::new(issue(&identity, now_unix())?);
        let session = Mutex::new(session);
        Ok(Arc::new(Self { identity, session, session_file: None, network, encryption }))
    }

    /// Like [`NodeSecurity::new`], but the session key is kept in `data_dir`
    /// (`DATA_DIR/session.key`, mode 0600, beside the identity key): a key stored there
    /// by an earlier command is used while more than half its validity is left, so a `get`
    /// starts without an RSA-4096 signature (tens of milliseconds). One that is missing,
    /// torn, stale or not genuine is replaced by a new one; failing to store it costs only
    /// that saving (said on stderr).
    pub fn with_session_file(
        identity: Identity,
        network: Option<NetworkSecret>,
        encryption: Encryption,
        data_dir: &Path,
    ) -> Result<Arc<Self>, crate::crypto::IdentityError> {
        let path = layout::session_path(data_dir);
        let now = now_unix();
        let stored = fs::read(&path).ok().map(Zeroizing::new);
        let kept = stored
            .and_then(|b| SessionIdentity::from_stored(&identity, &b, now))
            .filter(|s| !needs_renewal(s, now));
        let session = match kept {
            Some(s) => s,
            None => {
                let s = issue(&identity, now)?;
                store_session(&path, &s);
                s
            }
        };
        let session = Mutex::new(Arc::new(session));
        Ok(Arc::new(Self { identity, session, session_file: Some(path), network, encryption }))
    }

    /// This node's ID.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The encryption setting.
    pub fn encryption(&self) -> Encryption {
        self.encryption
    }

    /// The private network's secret, if any.
    pub fn network(&self) -> Option<&NetworkSecret> {
        self.network.as_ref()
    }

    /// The current session key, re-issued when half its validity is gone. The trigger is
    /// the local clock, not a peer: a peer cannot make the RSA key sign more often.
    pub fn session(&self) -> Arc<SessionIdentity> {
        self.session_at(now_unix())
    }

    fn session_at(&self, now: u64) -> Arc<SessionIdentity> {
        let mut s = self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if needs_renewal(&s, now) {
            match issue(&self.identity, now) {
                Ok(fresh) => {
                    if let Some(path) = &self.session_file {
                        store_session(path, &fresh);
                    }
                    *s = Arc::new(fresh);
                }
                Err(e) => note!("furymesh: cannot renew the session key: {e}"),
            }
        }
        s.clone()
    }

    fn config(
        &self,
        expected_peer: Option<NodeId>,
        channel_binding: Option<[u8; 32]>,
    ) -> HandshakeConfig {
        HandshakeConfig {
            local: self.session(),
            network: self.network.clone(),
            encryption: self.encryption,
            expected_peer,
            channel_binding,
        }
    }
}

/// Whether less than half of `s`'s validity is left at `now`: time to issue a new one.
fn needs_renewal(s: &SessionIdentity, now: u64) -> bool {
    now + SESSION_KEY_VALIDITY.as_secs() / 2 > s.not_after()
}

/// Keeps `s` at `path` for later commands (`write_atomic`: its temporary file is created
/// with mode 0600, so the key is never readable by others). A file lost or torn anyway is
/// only a new signature at the next start: `SessionIdentity::from_stored` refuses it.
fn store_session(path: &Path, s: &SessionIdentity) {
    if let Err(e) = crate::storage::write_atomic(path, &s.to_stored()) {
        note!("furymesh: cannot keep the session key in {}: {e}", path.display());
    }
}

fn issue(identity: &Identity, now: u64) -> Result<SessionIdentity, crate::crypto::IdentityError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    clock::fill_random(seed.as_mut());
    identity.issue_session(&mut clock::os_rng(), *seed, now + SESSION_KEY_VALIDITY.as_secs())
}

fn fresh_random() -> HandshakeRandom {
    let mut r = HandshakeRandom { ephemeral: [0; 32], nonce: [0; 32] };
    clock::fill_random(&mut r.ephemeral);
    clock::fill_random(&mut r.nonce);
    r
}

/// Why a handshake over a connection failed: the transport, the framing of the handshake
/// messages, the handshake core's verdict ([`HandshakeError`]), or the peer's refusal.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    #[error("connection error during the handshake: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed during the handshake")]
    Closed,
    #[error("handshake message of {len} bytes exceeds {HANDSHAKE_MESSAGE_BYTES_MAX}")]
    TooLong { len: usize },
    #[error("{0}")]
    Protocol(#[from] HandshakeError),
    #[error("the peer refused the handshake: {}", .0.text())]
    Refused(RefusalCode),
}

impl HandshakeFailure {
    /// Whose fault the failure is. Only the handshake core can blame this node (its own
    /// certificate, its network secret); transport failures, oversized messages and
    /// refusals are the peer's (seen from here, a refusal means the peer would not talk
    /// to this node).
    pub fn blame(&self) -> Blame {
        match self {
            Self::Protocol(e) => e.blame(),
            Self::Io(_) | Self::Closed | Self::TooLong { .. } | Self::Refused(_) => Blame::Peer,
        }
    }

    /// A short, stable name for what went wrong, for the `reason` label of
    /// `furymesh_incoming_handshake_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io(e) if e.kind() == io::ErrorKind::TimedOut => "timeout",
            Self::Io(_) => "io",
            Self::Closed => "closed",
            Self::TooLong { .. } => "oversized",
            Self::Refused(_) => "refused",
            Self::Protocol(e) => match e {
                HandshakeError::Malformed { .. } => "malformed",
                HandshakeError::UnsupportedVersion { .. } => "unsupported_version",
                HandshakeError::WrongNetworkSecret => "wrong_network",
                HandshakeError::EncryptionMismatch { .. } => "encryption_mismatch",
                HandshakeError::ChannelBindingMismatch { .. } => "channel_binding_mismatch",
                HandshakeError::NotTheExpectedNode { .. }
                | HandshakeError::PeerIdMismatch { .. } => "wrong_node",
                HandshakeError::PeerCertificate(_) => "bad_certificate",
                HandshakeError::NonContributoryKeyExchange => "bad_key_exchange",
                HandshakeError::BadSignature => "bad_signature",
                HandshakeError::BadFinishedMac => "bad_mac",
                HandshakeError::LocalCertificateExpired { .. } => "local_certificate_expired",
                HandshakeError::WeakNetworkSecret { .. } => "weak_network_secret",
            },
        }
    }

    /// The peer is not the node this connection pinned (it said so, or its certificate
    /// named another node).
    pub(super) fn is_wrong_node(&self) -> bool {
        matches!(
            self,
            Self::Refused(RefusalCode::NotPinnedNode)
                | Self::Protocol(HandshakeError::PeerIdMismatch { .. })
        )
    }
}

async fn send_hs<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(HANDSHAKE_PREFIX_BYTES + msg.len());
    push_handshake(&mut out, msg);
    w.write_all(&out).await?;
    w.flush().await
}

async fn recv_hs<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HandshakeFailure> {
    let mut prefix = [0u8; HANDSHAKE_PREFIX_BYTES];
    let eof = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            HandshakeFailure::Closed
        } else {
            HandshakeFailure::Io(e)
        }
    };
    r.read_exact(&mut prefix).await.map_err(eof)?;
    let len = handshake_len(prefix)
        .map_err(|_| HandshakeFailure::TooLong { len: usize::from(u16::from_le_bytes(prefix)) })?;
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg).await.map_err(eof)?;
    Ok(msg)
}

/// Runs the initiator's side on `s`: the peer must prove it is `expected` (if given) and
/// be in our network; `binding` binds the handshake to the DTLS channel `s` is
/// (`crypto::handshake`, "Channel binding"), `None` on TCP.
pub(super) async fn handshake_initiator<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    sec: &NodeSecurity,
    expected: Option<NodeId>,
    binding: Option<[u8; 32]>,
) -> Result<Session, HandshakeFailure> {
    let config = sec.config(expected, binding);
    let (state, hello) = Initiator::start(config, fresh_random(), now_unix())?;
    send_hs(s, &hello).await?;
    let reply = recv_hs(s).await?;
    if let HandshakeFrame::Refusal(code) = HandshakeFrame::parse(&reply) {
        return Err(HandshakeFailure::Refused(code));
    }
    let (finish, session) = state.handle_server_hello(&reply, now_unix())?;
    send_hs(s, &finish).await?;
    Ok(session)
}

/// Runs the responder's side on `s`. A peer that fails the ClientHello gets a one-byte
/// refusal code before the connection closes. `received` counts the peer's handshake
/// messages as each arrives whole (the seeder's deadline follows them). `binding` as for
/// [`handshake_initiator`].
pub(super) async fn handshake_responder<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    sec: &NodeSecurity,
    received: &std::cell::Cell<u32>,
    binding: Option<[u8; 32]>,
) -> Result<Session, HandshakeFailure> {
    let hello = recv_hs(s).await?;
    received.set(received.get() + 1);
    let (state, reply) = match Responder::handle_client_hello(
        sec.config(None, binding),
        fresh_random(),
        &hello,
        now_unix(),
    ) {
        Ok(ok) => ok,
        Err(e) => {
            let _ = async {
                s.write_all(&refusal(RefusalCode::of(&e))).await?;
                s.flush().await
            }
            .await;
            return Err(e.into());
        }
    };
    send_hs(s, &reply).await?;
    let finish = recv_hs(s).await?;
    received.set(received.get() + 1);
    Ok(state.handle_client_finish(&finish, now_unix())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = include_bytes!("../../tests/fixtures/identities/node00.pk8.der");

    #[test]
    fn the_session_key_is_renewed_at_half_life_and_not_before() {
        let sec = NodeSecurity::new(Identity::from_pkcs8_der(KEY).unwrap(), None, Encryption::On)
            .unwrap();
        let first = sec.session();
        let (issued, life) =
            (first.not_after() - SESSION_KEY_VALIDITY.as_secs(), SESSION_KEY_VALIDITY.as_secs());
        // Until half the validity is gone, every handshake gets the same key.
        let same = sec.session_at(issued + life / 2 - 60);
        assert_eq!(same.certificate_bytes(), first.certificate_bytes());
        // After that, a new one, valid a full period from then, for the same node.
        let later = issued + life / 2 + 60;
        let renewed = sec.session_at(later);
        assert_ne!(renewed.certificate_bytes(), first.certificate_bytes());
        assert_eq!(renewed.node_id(), first.node_id());
        assert_eq!(renewed.not_after(), later + life);
        // A peer accepts the renewed certificate at that time.
        let cert = crate::crypto::Certificate::from_bytes(renewed.certificate_bytes()).unwrap();
        assert_eq!(cert.verify(later).unwrap().node_id(), sec.node_id());
    }
}
