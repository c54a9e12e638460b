//! DHT datagrams: `dht::DhtMessage` ⇄ magic + `DhtPacket` FlatBuffer, and the persisted
//! routing table.

use std::net::SocketAddr;

use crate::addr::{ip_from_octets, ip_octets};
use flatbuffers::FlatBufferBuilder;

use super::generated::furymesh as fb;
use super::{verifier_options, DecodeError};
use crate::crypto::identity::{CERTIFICATE_BYTES_MAX, ED25519_SIGNATURE_BYTES};
use crate::crypto::signal::SIGNAL_MESSAGE_BYTES_MAX;
use crate::dht::{
    Contact, DhtBody, DhtMessage, Key, NodeId, Transports, CONTACTS_PER_MESSAGE_MAX,
    PROVIDERS_PER_MESSAGE_MAX,
};

/// First bytes of every DHT datagram. 0xFD keeps it apart from STUN, DTLS and TURN on a
/// shared port (RFC 7983); the last byte is the version.
pub const DHT_MAGIC: [u8; 4] = [0xFD, b'F', b'M', 1];
/// Largest DHT datagram we send or accept: 1,500-byte Ethernet MTU minus IPv6 and UDP
/// headers, so no datagram is fragmented on such a path. A full reply (20 contacts and 10
/// providers at 38 bytes each) is about 1.2 KB; the largest messages carry a certificate:
/// an announcement with signed transports (~1.41 KB) and a signaling HelloReply (~1.33 KB).
/// (Until WebRTC transports were advertised the bound was 1,400: nodes from before then
/// refuse a WebRTC seeder's announcement, which that seeder still answers for itself.)
pub const DHT_DATAGRAM_MAX_BYTES: usize = 1452;
/// Most contacts in a persisted routing table (160 buckets of k = 20).
const DHT_TABLE_CONTACTS_MAX: usize = 160 * CONTACTS_PER_MESSAGE_MAX;

fn contact_to_fb(c: &Contact) -> fb::DhtContact {
    fb::DhtContact::new(&fb::DhtId(*c.id.as_bytes()), &ip_octets(c.addr.ip()), c.addr.port())
}

fn contact_from_fb(c: &fb::DhtContact) -> Contact {
    let ip = ip_from_octets(<[u8; 16]>::from(c.ip()));
    Contact { id: NodeId::from_bytes(c.id().0), addr: SocketAddr::new(ip, c.port()) }
}

fn contacts_from_fb(
    v: Option<flatbuffers::Vector<'_, fb::DhtContact>>,
    max: usize,
    field: &'static str,
) -> Result<Vec<Contact>, DecodeError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    if v.len() > max {
        return Err(DecodeError::TooLong(field));
    }
    Ok(v.iter().map(contact_from_fb).collect())
}

/// The provider's own signature on an `AnnounceProvider`: its certificate, the record's
/// expiry and the session key's signature (see `crypto::sign_provider_record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceProof {
    /// Encoded `crypto::Certificate`, at most `CERTIFICATE_BYTES_MAX` bytes.
    pub certificate: Vec<u8>,
    /// Unix seconds.
    pub expires: u64,
    pub signature: [u8; ED25519_SIGNATURE_BYTES],
}

/// The transports a provider announces with its record, signed by its session key
/// (`crypto::sign_provider_transports`) next to the record's own signature, so nodes that
/// predate transports still verify and store the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedTransports {
    pub transports: Transports,
    pub signature: [u8; ED25519_SIGNATURE_BYTES],
}

/// What a DHT datagram carries beyond the core's [`DhtMessage`]: an announcement's
/// signed transports, a `Providers` reply's transports per provider (same order; missing
/// entries mean TCP only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtExtras {
    pub transports: Option<SignedTransports>,
    pub providers_transports: Vec<Transports>,
}

/// The signaling messages a DHT datagram may carry instead of a core message (kinds
/// `SIGNAL`..`SIGNAL_DELIVERED` of the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// Request to a relay: pass `signal` to `target`.
    Signal,
    /// The relay's reply: the target's answer, or `relayed` false.
    Answer,
    /// Request from a relay to the target.
    Deliver,
    /// The target's reply to `Deliver`.
    Delivered,
}

/// A signaling datagram: a sealed message (`crypto::signal`) relayed toward a node ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalPacket {
    /// Transaction ID: random in a request, echoed in its reply.
    pub tx: u64,
    /// The sending node as it names itself.
    pub sender: Contact,
    pub kind: SignalKind,
    /// The node the message is for.
    pub target: NodeId,
    /// The sealed message, at most `SIGNAL_MESSAGE_BYTES_MAX` bytes (empty when not
    /// relayed).
    pub signal: Vec<u8>,
    /// In an `Answer`: whether the relay passed the message on and got a reply.
    pub relayed: bool,
}

/// A decoded DHT datagram: a message for the core (with its proof and extras), or a
/// signaling message for the node's relay and signaling glue.
#[derive(Debug, Clone, PartialEq, Eq)]
// Decoded one at a time and handled at once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum DhtDatagram {
    Core { msg: DhtMessage, proof: Option<AnnounceProof>, extras: DhtExtras },
    Signal(SignalPacket),
}

fn transports_to_fb(t: Transports) -> fb::DhtTransports {
    fb::DhtTransports::new(t.flags(), t.webrtc_port)
}

fn transports_from_fb(t: &fb::DhtTransports) -> Transports {
    Transports::from_flags(t.flags(), t.webrtc_port())
}

/// Encodes a signaling datagram (magic + FlatBuffer) into `out`.
pub fn encode_signal(p: &SignalPacket, out: &mut Vec<u8>) {
    let mut fbb = FlatBufferBuilder::with_capacity(256 + p.signal.len());
    let kind = match p.kind {
        SignalKind::Signal => fb::DhtKind::SIGNAL,
        SignalKind::Answer => fb::DhtKind::SIGNAL_ANSWER,
        SignalKind::Deliver => fb::DhtKind::SIGNAL_DELIVER,
        SignalKind::Delivered => fb::DhtKind::SIGNAL_DELIVERED,
    };
    let signal = fbb.create_vector(&p.signal);
    let sender = contact_to_fb(&p.sender);
    let target = fb::DhtId(*p.target.as_bytes());
    let root = fb::DhtPacket::create(
        &mut fbb,
        &fb::DhtPacketArgs {
            tx: p.tx,
            sender: Some(&sender),
            kind,
            target: Some(&target),
            stored: p.relayed,
            read_only: true,
            signal: Some(signal),
            ..Default::default()
        },
    );
    fbb.finish_minimal(root);
    out.clear();
    out.extend_from_slice(&DHT_MAGIC);
    out.extend_from_slice(fbb.finished_data());
}

/// The canonical bytes of a provider's address in a signed record: the IPv6 (IPv4-mapped)
/// address and the port, little-endian — the same fields a `DhtContact` carries.
pub fn provider_addr_bytes(addr: SocketAddr) -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..16].copy_from_slice(&ip_octets(addr.ip()));
    out[16..].copy_from_slice(&addr.port().to_le_bytes());
    out
}

/// Encodes `msg` as a datagram (magic + FlatBuffer) into `out`.
pub fn encode_dht(msg: &DhtMessage, out: &mut Vec<u8>) {
    encode_dht_proved(msg, None, out);
}

/// Encodes `msg`, with the provider's proof when it is an `AnnounceProvider`.
pub fn encode_dht_proved(msg: &DhtMessage, proof: Option<&AnnounceProof>, out: &mut Vec<u8>) {
    encode_dht_with(msg, proof, &DhtExtras::default(), out);
}

/// Encodes `msg` with its proof and extras (signed transports of an announcement,
/// transports of a reply's providers).
pub fn encode_dht_with(
    msg: &DhtMessage,
    proof: Option<&AnnounceProof>,
    extras: &DhtExtras,
    out: &mut Vec<u8>,
) {
    let mut fbb = FlatBufferBuilder::with_capacity(512);
    let (kind, target, contacts, providers, provider, stored) = match &msg.body {
        DhtBody::Ping => (fb::DhtKind::PING, None, None, None, None, false),
        DhtBody::Pong => (fb::DhtKind::PONG, None, None, None, None, false),
        DhtBody::FindNode { target } => {
            (fb::DhtKind::FIND_NODE, Some(*target.as_bytes()), None, None, None, false)
        }
        DhtBody::Nodes { contacts } => {
            (fb::DhtKind::NODES, None, Some(contacts.as_slice()), None, None, false)
        }
        DhtBody::GetProviders { key } => {
            (fb::DhtKind::GET_PROVIDERS, Some(*key.as_bytes()), None, None, None, false)
        }
        DhtBody::Providers { providers, closer } => (
            fb::DhtKind::PROVIDERS,
            None,
            Some(closer.as_slice()),
            Some(providers.as_slice()),
            None,
            false,
        ),
        DhtBody::AnnounceProvider { key, provider } => (
            fb::DhtKind::ANNOUNCE_PROVIDER,
            Some(*key.as_bytes()),
            None,
            None,
            Some(provider),
            false,
        ),
        DhtBody::AnnounceAck { stored } => {
            (fb::DhtKind::ANNOUNCE_ACK, None, None, None, None, *stored)
        }
    };
    let mut vector = |list: Option<&[Contact]>| {
        list.map(|l| {
            let items: Vec<fb::DhtContact> = l.iter().map(contact_to_fb).collect();
            fbb.create_vector(&items)
        })
    };
    let contacts = vector(contacts);
    let providers = vector(providers);
    let sender = contact_to_fb(&msg.sender);
    let provider = provider.map(contact_to_fb);
    let target = target.map(fb::DhtId);
    let (provider_certificate, provider_signature) = match proof {
        Some(p) => (Some(fbb.create_vector(&p.certificate)), Some(fbb.create_vector(&p.signature))),
        None => (None, None),
    };
    let transports = extras.transports.map(|t| transports_to_fb(t.transports));
    let transports_signature = extras.transports.map(|t| fbb.create_vector(&t.signature));
    let providers_transports = match &msg.body {
        DhtBody::Providers { providers, .. } if !extras.providers_transports.is_empty() => {
            let v: Vec<fb::DhtTransports> = extras
                .providers_transports
                .iter()
                .take(providers.len())
                .map(|t| transports_to_fb(*t))
                .collect();
            Some(fbb.create_vector(&v))
        }
        _ => None,
    };
    let root = fb::DhtPacket::create(
        &mut fbb,
        &fb::DhtPacketArgs {
            tx: msg.tx,
            sender: Some(&sender),
            kind,
            target: target.as_ref(),
            contacts,
            providers,
            provider: provider.as_ref(),
            stored,
            read_only: msg.read_only,
            provider_certificate,
            provider_expires: proof.map_or(0, |p| p.expires),
            provider_signature,
            provider_transports: transports.as_ref(),
            provider_transports_signature: transports_signature,
            providers_transports,
            signal: None,
        },
    );
    fbb.finish_minimal(root);
    out.clear();
    out.extend_from_slice(&DHT_MAGIC);
    out.extend_from_slice(fbb.finished_data());
}

/// Verifies and decodes one datagram. Never panics on any input.
pub fn decode_dht(datagram: &[u8]) -> Result<DhtMessage, DecodeError> {
    decode_dht_proved(datagram).map(|(m, _)| m)
}

/// [`decode_dht`], also returning an `AnnounceProvider`'s proof if it carries one (checked
/// for shape only: the caller verifies the certificate and the signature).
pub fn decode_dht_proved(
    datagram: &[u8],
) -> Result<(DhtMessage, Option<AnnounceProof>), DecodeError> {
    match decode_dht_datagram(datagram)? {
        DhtDatagram::Core { msg, proof, .. } => Ok((msg, proof)),
        DhtDatagram::Signal(_) => Err(DecodeError::UnknownType(fb::DhtKind::SIGNAL.0 as i8)),
    }
}

/// Verifies and decodes one datagram of any kind: a core message with its proof and
/// extras, or a signaling message. Never panics on any input; every list and blob is
/// bounded (`DecodeError::TooLong`).
pub fn decode_dht_datagram(datagram: &[u8]) -> Result<DhtDatagram, DecodeError> {
    if datagram.len() > DHT_DATAGRAM_MAX_BYTES {
        return Err(DecodeError::TooLong("datagram"));
    }
    let body = datagram.strip_prefix(&DHT_MAGIC[..]).ok_or(DecodeError::Unverifiable)?;
    let p = flatbuffers::root_with_opts::<fb::DhtPacket>(&verifier_options(body.len()), body)
        .map_err(|_| DecodeError::Unverifiable)?;
    let sender = contact_from_fb(p.sender().ok_or(DecodeError::MissingField("sender"))?);
    let target = || p.target().map(|t| t.0).ok_or(DecodeError::MissingField("target"));
    let body = match p.kind() {
        fb::DhtKind::PING => DhtBody::Ping,
        fb::DhtKind::PONG => DhtBody::Pong,
        fb::DhtKind::FIND_NODE => DhtBody::FindNode { target: NodeId::from_bytes(target()?) },
        fb::DhtKind::NODES => DhtBody::Nodes {
            contacts: contacts_from_fb(p.contacts(), CONTACTS_PER_MESSAGE_MAX, "contacts")?,
        },
        fb::DhtKind::GET_PROVIDERS => DhtBody::GetProviders { key: Key::from_bytes(target()?) },
        fb::DhtKind::PROVIDERS => DhtBody::Providers {
            providers: contacts_from_fb(p.providers(), PROVIDERS_PER_MESSAGE_MAX, "providers")?,
            closer: contacts_from_fb(p.contacts(), CONTACTS_PER_MESSAGE_MAX, "contacts")?,
        },
        fb::DhtKind::ANNOUNCE_PROVIDER => DhtBody::AnnounceProvider {
            key: Key::from_bytes(target()?),
            provider: contact_from_fb(p.provider().ok_or(DecodeError::MissingField("provider"))?),
        },
        fb::DhtKind::ANNOUNCE_ACK => DhtBody::AnnounceAck { stored: p.stored() },
        kind @ (fb::DhtKind::SIGNAL
        | fb::DhtKind::SIGNAL_ANSWER
        | fb::DhtKind::SIGNAL_DELIVER
        | fb::DhtKind::SIGNAL_DELIVERED) => {
            let signal = p.signal().map(|v| v.bytes()).unwrap_or_default();
            if signal.len() > SIGNAL_MESSAGE_BYTES_MAX {
                return Err(DecodeError::TooLong("signal"));
            }
            let kind = match kind {
                fb::DhtKind::SIGNAL => SignalKind::Signal,
                fb::DhtKind::SIGNAL_ANSWER => SignalKind::Answer,
                fb::DhtKind::SIGNAL_DELIVER => SignalKind::Deliver,
                _ => SignalKind::Delivered,
            };
            return Ok(DhtDatagram::Signal(SignalPacket {
                tx: p.tx(),
                sender,
                kind,
                target: NodeId::from_bytes(target()?),
                signal: signal.to_vec(),
                relayed: p.stored(),
            }));
        }
        other => return Err(DecodeError::UnknownType(other.0 as i8)),
    };
    let proof = match (p.provider_certificate(), p.provider_signature()) {
        (Some(c), Some(sig)) => {
            if c.len() > CERTIFICATE_BYTES_MAX {
                return Err(DecodeError::TooLong("provider_certificate"));
            }
            let signature = sig
                .bytes()
                .try_into()
                .map_err(|_| DecodeError::WrongLength("provider_signature"))?;
            Some(AnnounceProof {
                certificate: c.bytes().to_vec(),
                expires: p.provider_expires(),
                signature,
            })
        }
        _ => None,
    };
    let transports = match (p.provider_transports(), p.provider_transports_signature()) {
        (Some(t), Some(sig)) => Some(SignedTransports {
            transports: transports_from_fb(t),
            signature: sig
                .bytes()
                .try_into()
                .map_err(|_| DecodeError::WrongLength("provider_transports_signature"))?,
        }),
        _ => None,
    };
    let providers_transports = match p.providers_transports() {
        Some(v) if v.len() > PROVIDERS_PER_MESSAGE_MAX => {
            return Err(DecodeError::TooLong("providers_transports"))
        }
        Some(v) => v.iter().map(transports_from_fb).collect(),
        None => Vec::new(),
    };
    let msg = DhtMessage { tx: p.tx(), sender, body, read_only: p.read_only() };
    Ok(DhtDatagram::Core { msg, proof, extras: DhtExtras { transports, providers_transports } })
}

/// Encodes a routing-table snapshot for `DATA_DIR/dht-table.fmt`.
pub fn encode_dht_table(contacts: &[Contact]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64 + contacts.len() * 40);
    let items: Vec<fb::DhtContact> =
        contacts.iter().take(DHT_TABLE_CONTACTS_MAX).map(contact_to_fb).collect();
    let v = fbb.create_vector(&items);
    let root = fb::DhtTable::create(&mut fbb, &fb::DhtTableArgs { contacts: Some(v) });
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

/// Decodes a routing-table snapshot.
pub fn decode_dht_table(buf: &[u8]) -> Result<Vec<Contact>, DecodeError> {
    let t = flatbuffers::root_with_opts::<fb::DhtTable>(&verifier_options(buf.len()), buf)
        .map_err(|_| DecodeError::Unverifiable)?;
    contacts_from_fb(t.contacts(), DHT_TABLE_CONTACTS_MAX, "contacts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(n: u8, addr: &str) -> Contact {
        Contact { id: NodeId::from_bytes([n; 20]), addr: addr.parse().unwrap() }
    }

    #[test]
    fn every_dht_message_round_trips() {
        let a = contact(1, "127.0.0.1:7420");
        let b = contact(2, "[2001:db8::1]:9");
        let key = Key::from_bytes([7; 20]);
        let bodies = [
            DhtBody::Ping,
            DhtBody::Pong,
            DhtBody::FindNode { target: NodeId::from_bytes([3; 20]) },
            DhtBody::Nodes { contacts: vec![a, b] },
            DhtBody::GetProviders { key },
            DhtBody::Providers { providers: vec![b], closer: vec![a, b] },
            DhtBody::AnnounceProvider { key, provider: a },
            DhtBody::AnnounceAck { stored: true },
        ];
        let mut buf = Vec::new();
        for body in bodies {
            let msg = DhtMessage { tx: 0xdead_beef, sender: a, body, read_only: true };
            encode_dht(&msg, &mut buf);
            assert!(buf.len() <= DHT_DATAGRAM_MAX_BYTES);
            assert_eq!(decode_dht(&buf), Ok(msg));
        }
    }

    #[test]
    fn a_full_reply_fits_one_datagram() {
        let c = contact(9, "[2001:db8::1]:65535");
        let body = DhtBody::Providers {
            providers: vec![c; PROVIDERS_PER_MESSAGE_MAX],
            closer: vec![c; CONTACTS_PER_MESSAGE_MAX],
        };
        let mut buf = Vec::new();
        encode_dht(&DhtMessage { tx: u64::MAX, sender: c, body, read_only: false }, &mut buf);
        assert!(buf.len() <= DHT_DATAGRAM_MAX_BYTES, "{} bytes", buf.len());
        assert!(decode_dht(&buf).is_ok());
    }

    #[test]
    fn the_largest_messages_fit_one_datagram() {
        // A real RSA-4096 certificate is 1,106 bytes: SPKI 550, signature 512, the rest.
        let certificate = vec![7u8; 1106];
        let c = contact(9, "[2001:db8::1]:65535");
        let msg = DhtMessage {
            tx: u64::MAX,
            sender: c,
            body: DhtBody::AnnounceProvider { key: Key::from_bytes([1; 20]), provider: c },
            read_only: false,
        };
        let proof = AnnounceProof {
            certificate: certificate.clone(),
            expires: u64::MAX,
            signature: [1; 64],
        };
        let transports = Transports { tcp: true, webrtc: true, webrtc_port: 65535 };
        let extras = DhtExtras {
            transports: Some(SignedTransports { transports, signature: [2; 64] }),
            providers_transports: Vec::new(),
        };
        let mut buf = Vec::new();
        encode_dht_with(&msg, Some(&proof), &extras, &mut buf);
        assert!(buf.len() <= DHT_DATAGRAM_MAX_BYTES, "announcement: {} bytes", buf.len());
        match decode_dht_datagram(&buf) {
            Ok(DhtDatagram::Core { msg: m, proof: p, extras: e }) => {
                assert_eq!((m, p, e), (msg, Some(proof), extras));
            }
            other => panic!("{other:?}"),
        }
        // The largest signaling message (a HelloReply with the largest certificate).
        let p = SignalPacket {
            tx: 1,
            sender: c,
            kind: SignalKind::Answer,
            target: NodeId::from_bytes([3; 20]),
            signal: vec![5; SIGNAL_MESSAGE_BYTES_MAX],
            relayed: true,
        };
        encode_signal(&p, &mut buf);
        assert!(buf.len() <= DHT_DATAGRAM_MAX_BYTES, "signal: {} bytes", buf.len());
        assert_eq!(decode_dht_datagram(&buf), Ok(DhtDatagram::Signal(p.clone())));
        // Every prefix and every flipped byte of a signal datagram: decoded or refused,
        // never a panic; a signal longer than its bound is refused.
        for i in 0..buf.len() {
            let _ = decode_dht_datagram(&buf[..i]);
            let mut b = buf.clone();
            b[i] ^= 0x5a;
            let _ = decode_dht_datagram(&b);
        }
        let long = SignalPacket { signal: vec![5; SIGNAL_MESSAGE_BYTES_MAX + 1], ..p };
        encode_signal(&long, &mut buf);
        assert!(decode_dht_datagram(&buf).is_err());
        // A reply's transports per provider round-trip; too many are refused.
        let body = DhtBody::Providers { providers: vec![c; 2], closer: vec![] };
        let msg = DhtMessage { tx: 2, sender: c, body, read_only: false };
        let extras = DhtExtras {
            transports: None,
            providers_transports: vec![transports, Transports::default()],
        };
        encode_dht_with(&msg, None, &extras, &mut buf);
        match decode_dht_datagram(&buf) {
            Ok(DhtDatagram::Core { extras: e, .. }) => assert_eq!(e, extras),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_datagrams_are_rejected_without_panicking() {
        let mut buf = Vec::new();
        let msg = DhtMessage {
            tx: 1,
            sender: contact(1, "10.0.0.1:1"),
            body: DhtBody::Nodes { contacts: vec![contact(2, "10.0.0.2:2"); 20] },
            read_only: false,
        };
        encode_dht(&msg, &mut buf);
        for cut in 0..buf.len() {
            let _ = decode_dht(&buf[..cut]);
        }
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x5a;
            let _ = decode_dht(&b);
        }
        assert!(decode_dht(&buf[4..]).is_err(), "no magic");
        assert!(decode_dht(&[0u8; 2000]).is_err(), "oversized");
    }

    #[test]
    fn a_signed_provider_address_is_the_address_its_contact_carries() {
        for addr in ["127.0.0.1:7420", "[::ffff:127.0.0.1]:7420", "[2001:db8::1]:9"] {
            let c = contact(1, addr);
            let fb = contact_to_fb(&c);
            let signed = provider_addr_bytes(c.addr);
            assert_eq!(signed[..16], <[u8; 16]>::from(fb.ip()), "{addr}");
            assert_eq!(signed[16..], fb.port().to_le_bytes(), "{addr}");
        }
        // An IPv4 address and its IPv4-mapped form sign the same bytes and decode as IPv4.
        let v4 = contact(1, "127.0.0.1:7420");
        let mapped = contact(1, "[::ffff:127.0.0.1]:7420");
        assert_eq!(provider_addr_bytes(v4.addr), provider_addr_bytes(mapped.addr));
        assert_eq!(contact_from_fb(&contact_to_fb(&mapped)), v4);
    }

    #[test]
    fn table_snapshot_round_trips() {
        let cs = vec![contact(1, "127.0.0.1:1"), contact(2, "[::1]:2")];
        assert_eq!(decode_dht_table(&encode_dht_table(&cs)), Ok(cs));
    }
}
