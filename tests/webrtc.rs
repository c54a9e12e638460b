//! WebRTC data channels end to end, through real processes on loopback: a seeder answering
//! offers on every shard (`seed --webrtc`) and `get --transport webrtc` downloading over a
//! data channel, byte-identical; hostile datagrams at the WebRTC port; an answer whose DTLS
//! fingerprint was changed on the way never opens a channel.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// A `furymesh seed --webrtc 127.0.0.1:0` process: its TCP and WebRTC (UDP) addresses.
struct RtcSeeder {
    seeder: Seeder,
    tcp: SocketAddr,
    udp: SocketAddr,
}

impl RtcSeeder {
    fn start(data_dir: &Path, shards: usize, extra: &[&str]) -> Self {
        let mut args = vec!["--api", "off", "--webrtc", "127.0.0.1:0"];
        args.extend(extra);
        let seeder = Seeder::start_with_args(data_dir, shards, &args);
        let (tcp, udp) = (seeder.addr, seeder.webrtc.expect("the seeder's WebRTC address"));
        Self { seeder, tcp, udp }
    }

    /// SIGTERM, wait, and return the stats JSON it prints.
    fn stop(self) -> serde_json::Value {
        self.seeder.stop()
    }
}

/// One file of `len` bytes (pattern `seed`) published with `publish` in `seed/` of a fresh
/// temp dir and served by an [`RtcSeeder`] of `shards` shards started with `args`; `dl/` is
/// the downloader's data directory (not made yet).
struct OneFile {
    t: tempfile::TempDir,
    sd: PathBuf,
    dd: PathBuf,
    data: Vec<u8>,
    id: String,
    seeder: RtcSeeder,
}

fn one_file(len: usize, seed: u64, publish: &[&str], shards: usize, args: &[&str]) -> OneFile {
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    let data = write_file(&t.path().join("f.bin"), len, seed);
    let id = publish_id(&sd, &t.path().join("f.bin"), publish);
    let seeder = RtcSeeder::start(&sd, shards, args);
    OneFile { t, sd, dd, data, id, seeder }
}

/// `get` over WebRTC from `peer` (the seeder's UDP address), as JSON.
fn get_webrtc(data_dir: &Path, id: &str, peer: &str, out: &Path) -> serde_json::Value {
    json(&run_ok(get_cmd(data_dir, id, peer, out).args(["--transport", "webrtc"])))
}

#[test]
fn a_download_over_webrtc_is_byte_identical_and_reports_its_transport() {
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    // Not a multiple of the chunk size, several chunks, each cut into 64 KiB blocks.
    let data = write_file(&t.path().join("f.bin"), (3 << 20) + 12_345, 1);
    let id = publish_id(&sd, &t.path().join("f.bin"), &["--chunk-size", "256KiB"]);
    let seeder = RtcSeeder::start(&sd, 2, &[]);

    let out = t.path().join("out.bin");
    let report = get_webrtc(&dd, &id, &seeder.udp.to_string(), &out);
    assert_eq!(std::fs::read(&out).unwrap(), data, "webrtc download differs");
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{report}");
    assert_eq!(peers[0]["transport"], "webrtc", "{report}");
    // Endgame duplicates (two connections asking for the last chunks) count too.
    assert!(peers[0]["bytes"].as_u64().unwrap() >= data.len() as u64, "{report}");

    // The same seeder over TCP, for contrast: the report names the transport it used.
    let out_tcp = t.path().join("out-tcp.bin");
    let report = json(&run_ok(&mut get_cmd(&dd, &id, &seeder.tcp.to_string(), &out_tcp)));
    assert_eq!(report["peers"][0]["transport"], "tcp", "{report}");
    assert_eq!(std::fs::read(&out_tcp).unwrap(), data);

    let stats = seeder.stop();
    assert!(stats["webrtc_connections"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["connections"].as_u64().unwrap() > stats["webrtc_connections"].as_u64().unwrap());
    // Encryption on: TCP sealed every payload byte in our records; the data channel sent
    // them in plaintext records inside its DTLS, to which the handshake was bound.
    assert!(served_bytes(&stats) >= 2 * data.len() as u64, "{stats}");
    assert!(stats["payload_bytes_sealed"].as_u64().unwrap() >= data.len() as u64, "{stats}");
    assert!(stats["payload_bytes_from_map"].as_u64().unwrap() >= data.len() as u64, "{stats}");
    // Every path to this downloader is loopback: SCTP packets far larger than the 1,191
    // bytes any other path gets (`WEBRTC_LOOPBACK_SCTP_MTU`).
    let largest = stats["webrtc_datagram_bytes_max"].as_u64().unwrap();
    assert!(largest > 8_192 && largest < 17_000, "{stats}");
}

#[test]
fn plaintext_records_over_webrtc_and_a_pinned_node_id_hold() {
    let OneFile { t, sd, dd, data, id, seeder } =
        one_file(700_001, 2, &["--chunk-size", "64KiB"], 1, &["--encryption", "off"]);
    let udp = seeder.udp.to_string();

    // Pinned to the right node: the handshake inside the channel proves it.
    let out = t.path().join("out.bin");
    let pinned = format!("{}@{udp}", node_id(&sd));
    let mut get = get_cmd(&dd, &id, &pinned, &out);
    let report = json(&run_ok(get.args(["--transport", "webrtc", "--encryption", "off"])));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(report["peers"][0]["transport"], "webrtc", "{report}");

    // Pinned to another node: the channel opens, the handshake in it refuses, nothing is
    // written.
    let other = t.path().join("other");
    let wrong = format!("{}@{udp}", node_id(&other));
    let out2 = t.path().join("out2.bin");
    let mut get = get_cmd(&dd, &id, &wrong, &out2);
    let res = get.args(["--transport", "webrtc", "--encryption", "off"]).output().unwrap();
    assert!(!res.status.success(), "a download from the wrong node succeeded");
    assert!(!out2.exists());

    let stats = seeder.stop();
    // Plaintext over a data channel is copied into messages: read with pread, never handed
    // over as map slices, and still counted as plaintext payload (endgame duplicates too).
    let plain = stats["payload_bytes_from_map"].as_u64().unwrap();
    assert!(plain >= data.len() as u64 && stats["payload_bytes_sealed"] == 0, "{stats}");
}

#[test]
fn hostile_datagrams_at_the_webrtc_port_are_dropped_and_the_seeder_serves_on() {
    let OneFile { t, dd, data, id, seeder, .. } = one_file(300_000, 3, &[], 2, &[]);

    let junk_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut state = 42u64;
    let mut offer = vec![0xF6, 1];
    offer.extend_from_slice(&7u64.to_le_bytes());
    let sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 x\r\n";
    offer.extend_from_slice(&(sdp.len() as u16).to_le_bytes());
    offer.extend_from_slice(sdp);
    let unpadded = offer.clone();
    offer.resize(1200, 0);
    let mut lying = offer.clone();
    lying[10..12].copy_from_slice(&u16::MAX.to_le_bytes());
    let datagrams: Vec<Vec<u8>> = vec![
        offer,                                   // garbage SDP in a well-formed offer
        unpadded,                                // shorter than the answer would be
        lying,                                   // SDP length past the datagram
        vec![0xF6],                              // header cut short
        vec![0xF6; 9000],                        // oversized signal
        vec![0x00, 0x01, 0x00, 0x00],            // a STUN-looking stray
        vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0], // a DTLS-looking stray
        junk(1500, &mut state),
        junk(40, &mut state),
    ];
    for d in &datagrams {
        junk_socket.send_to(d, seeder.udp).unwrap();
    }

    let out = t.path().join("out.bin");
    let report = get_webrtc(&dd, &id, &seeder.udp.to_string(), &out);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(report["peers"][0]["transport"], "webrtc");
    let stats = seeder.stop();
    // The five signaling datagrams were dropped (garbage SDP, unpadded, a lying length, cut
    // short, oversized); only the real downloader's offers were answered.
    assert!(stats["webrtc_offers_dropped"].as_u64().unwrap() >= 5, "{stats}");
    assert!(stats["webrtc_offers"].as_u64().unwrap() >= 1, "{stats}");
}

/// A UDP relay between one downloader and the seeder that rewrites the DTLS fingerprint in
/// the seeder's answer (RFC 8122 `a=fingerprint`): a man in the middle offering its own
/// certificate. Returns the relay's address; it runs until the process ends.
fn fingerprint_tampering_relay(seeder: SocketAddr) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = front.local_addr().unwrap();
    let client = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let (f2, b2, c2) = (front.try_clone().unwrap(), back.try_clone().unwrap(), client.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = f2.recv_from(&mut buf) {
            *c2.lock().unwrap() = Some(from);
            let _ = b2.send_to(&buf[..n], seeder);
        }
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = back.recv_from(&mut buf) {
            let mut d = buf[..n].to_vec();
            if d.first() == Some(&0xF6) {
                // Flip one hex digit of the fingerprint: same length, another certificate.
                let text = String::from_utf8_lossy(&d).into_owned();
                if let Some(at) = text.find("a=fingerprint:sha-256 ") {
                    let i = at + "a=fingerprint:sha-256 ".len();
                    d[i] = if d[i] == b'A' { b'B' } else { b'A' };
                }
            }
            if let Some(c) = *client.lock().unwrap() {
                let _ = front.send_to(&d, c);
            }
        }
    });
    addr
}

#[test]
fn an_answer_with_a_tampered_dtls_fingerprint_never_opens_a_channel() {
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    write_file(&t.path().join("f.bin"), 200_000, 4);
    let id = publish_id(&sd, &t.path().join("f.bin"), &[]);
    let seeder = RtcSeeder::start(&sd, 1, &[]);
    let relay = fingerprint_tampering_relay(seeder.udp);

    let out = t.path().join("out.bin");
    let res = get_cmd(&dd, &id, &relay.to_string(), &out)
        .args(["--transport", "webrtc"])
        .output()
        .unwrap();
    assert!(!res.status.success(), "a channel opened despite the tampered fingerprint");
    assert!(!out.exists());
    let stats = seeder.stop();
    // The downloader cannot tell this from a seeder too busy to finish DTLS in time (rtc
    // reports neither as failed), so it offers again a few times (CONNECT_TRIES, 4), and
    // no attempt ever opens a channel.
    let offers = stats["webrtc_offers"].as_u64().unwrap();
    assert!((1..=4).contains(&offers), "{stats}");
    assert_eq!(stats["webrtc_connections"], 0, "{stats}");
    assert_eq!(served_bytes(&stats), 0, "{stats}");
}

#[test]
fn auto_uses_tcp_where_it_connects_and_a_data_channel_where_it_cannot_in_one_download() {
    let t = tempdir();
    let (a, b, dd) = (t.path().join("a"), t.path().join("b"), t.path().join("dl"));
    let data = write_file(&t.path().join("f.bin"), (2 << 20) + 777, 5);
    let id = publish_id(&a, &t.path().join("f.bin"), &["--chunk-size", "64KiB"]);
    assert_eq!(publish_id(&b, &t.path().join("f.bin"), &["--chunk-size", "64KiB"]), id);
    // A is held to 256 KiB/s, so the download is still running (8 s of A alone) when B's
    // data channel opens: a set-up that ends after the download completed is abandoned, and
    // B then takes most of the file.
    let sa = RtcSeeder::start(&a, 1, &["--max-upload-rate", "256KiB"]);
    let sb = RtcSeeder::start(&b, 1, &[]);

    // Seeder A by its TCP address, seeder B by its WebRTC (UDP) address, where nothing
    // accepts TCP: auto connects to A over TCP and falls back to a data channel for B.
    let out = t.path().join("out.bin");
    let mut get = fm(&dd);
    get.args(["--json", "get", &id, "--transport", "auto", "-o"]).arg(&out);
    get.args(["--peer", &sa.tcp.to_string(), "--peer", &sb.udp.to_string()]);
    let report = json(&run_ok(&mut get));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let peers = report["peers"].as_array().unwrap();
    let by_addr = |addr: SocketAddr| {
        peers.iter().find(|p| p["addr"] == addr.to_string()).unwrap_or_else(|| panic!("{report}"))
    };
    assert_eq!(by_addr(sa.tcp)["transport"], "tcp", "{report}");
    assert_eq!(by_addr(sb.udp)["transport"], "webrtc", "{report}");
    assert!(by_addr(sb.udp)["bytes"].as_u64().unwrap() > 0, "{report}");
    let total: u64 = peers.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    assert!(total >= data.len() as u64, "{report}");
    // Each seeder saw the transport it was reached by.
    let (st_a, st_b) = (sa.stop(), sb.stop());
    assert_eq!(st_a["webrtc_connections"], 0, "{st_a}");
    assert!(st_b["webrtc_connections"].as_u64().unwrap() >= 1, "{st_b}");
}

#[test]
fn a_one_chunk_download_sets_up_one_data_channel() {
    let OneFile { t, dd, data, id, seeder, .. } = one_file(60_000, 8, &[], 1, &[]);
    let out = t.path().join("out.bin");
    // Four connections asked for, one chunk to fetch: the data channel that brought the
    // manifest fetches it, and no other session is set up.
    let mut get = get_cmd(&dd, &id, &seeder.udp.to_string(), &out);
    let report = json(&run_ok(get.args(["--transport", "webrtc", "--connections", "4"])));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(report["chunks_fetched"], 1, "{report}");
    let first = report["first_chunk_seconds"].as_f64().unwrap();
    assert!(first > 0.0 && first <= report["seconds"].as_f64().unwrap(), "{report}");
    let stats = seeder.stop();
    assert_eq!(stats["webrtc_connections"], 1, "{stats}");
}

#[test]
fn a_seeder_configured_for_256_kib_messages_serves_over_webrtc() {
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    let data = write_file(&t.path().join("f.bin"), (1 << 20) + 3, 6);
    let id = publish_id(&sd, &t.path().join("f.bin"), &["--chunk-size", "512KiB"]);
    let config = t.path().join("node.toml");
    std::fs::write(&config, "webrtc_block_bytes = 262144\n").unwrap();
    let seeder = RtcSeeder::start(&sd, 1, &["--config", config.to_str().unwrap()]);
    let out = t.path().join("out.bin");
    let report = get_webrtc(&dd, &id, &seeder.udp.to_string(), &out);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(report["peers"][0]["transport"], "webrtc");
    seeder.stop();

    // Beyond what browsers accept: refused with the key's name, the seeder does not start.
    std::fs::write(&config, "webrtc_block_bytes = 262145\n").unwrap();
    let res = fm(&sd)
        .args(["seed", "--listen", "127.0.0.1:0", "--api", "off", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(stderr_of(&res).contains("webrtc_block_bytes"), "{}", stderr_of(&res));
}

/// Admission control (tuning.md, "WebRTC: 1,000 sessions on one seeder"): a seeder shard
/// allowed one set-up at a time is offered twelve at once by one node. The offers beyond
/// the slot are answered "busy" (no session made), wait their turn, and every download
/// still completes byte-identical over its own data channel.
#[test]
fn offers_beyond_a_shards_set_up_slots_are_answered_busy_and_all_complete_in_turn() {
    use furymesh::node::{self, GetOptions, PeerAddr, TransportChoice};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    const DOWNLOADS: usize = 12;
    let t = tempdir();
    let config = t.path().join("node.toml");
    std::fs::write(&config, "webrtc_handshakes_per_shard = 1\n").unwrap();
    let f = one_file(
        200_000,
        11,
        &["--chunk-size", "64KiB"],
        1,
        &["--config", config.to_str().unwrap()],
    );

    let downloader = downloading_node(&f.dd, 1);
    let h = downloader.handle();
    // All twelve started before the first set-up can finish: their offers leave the one
    // shard together.
    let ids: Vec<_> = (0..DOWNLOADS)
        .map(|i| {
            let peer = PeerAddr { addr: f.seeder.udp, node_id: None };
            let out = f.t.path().join(format!("out{i}.bin"));
            let opts = GetOptions {
                connections: 1,
                window: 4,
                max_peers: 1,
                transport: TransportChoice::Webrtc,
                ..get_options(&h, f.id.parse().unwrap(), peer, out)
            };
            let progress = Box::new(|_: node::GetProgress| {});
            h.download(opts, Arc::new(AtomicBool::new(false)), progress).unwrap()
        })
        .collect();
    for (i, id) in ids.into_iter().enumerate() {
        let report = h.wait(id).unwrap().unwrap_or_else(|e| panic!("download {i}: {e}"));
        assert_eq!(report.peers.len(), 1, "download {i}");
        let out = std::fs::read(f.t.path().join(format!("out{i}.bin"))).unwrap();
        assert!(out == f.data, "download {i} differs");
    }
    drop(downloader);
    let stats = f.seeder.stop();
    assert!(stats["webrtc_offers_busy"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["webrtc_connections"], DOWNLOADS, "one channel each: {stats}");
    assert_eq!(stats["webrtc_setup_failures"], 0, "{stats}");
}

/// A bootstrap node with nothing published (the DHT's meeting point).
fn bootstrap_node(dir: &Path) -> Seeder {
    Seeder::start_with_args(dir, 1, &["--api", "off"])
}

#[test]
fn a_node_that_knows_only_a_bootstrap_address_downloads_over_webrtc_signaled_through_the_dht() {
    let t = tempdir();
    let (boot, sd, dd) = (t.path().join("boot"), t.path().join("seed"), t.path().join("dl"));
    let data = write_file(&t.path().join("f.bin"), (1 << 20) + 4321, 7);
    let id = publish_id(&sd, &t.path().join("f.bin"), &["--chunk-size", "256KiB"]);
    let b0 = bootstrap_node(&boot);
    let seeder = RtcSeeder::start(&sd, 2, &["--bootstrap", &b0.peer()]);

    // The record advertises WebRTC: `dht find-providers` shows it.
    let found = json(&run_ok(fm(&dd).args([
        "--json",
        "dht",
        "find-providers",
        &id,
        "--bootstrap",
        &b0.peer(),
        "--timeout-secs",
        "10",
    ])));
    let provider = &found["contacts"][0];
    assert_eq!(provider["addr"], seeder.tcp.to_string(), "{found}");
    assert_eq!(provider["webrtc"], true, "{found}");
    assert_eq!(provider["tcp"], true, "{found}");
    assert_eq!(provider["webrtc_port"], seeder.udp.port(), "{found}");

    // Only the bootstrap address is known: providers come from the DHT, and the offer and
    // answer travel through it (the bootstrap node relays them to the seeder).
    let out = t.path().join("out.bin");
    let mut get = fm(&dd);
    get.args(["--json", "get", &id, "--transport", "webrtc", "--bootstrap", &b0.peer(), "-o"]);
    let report = json(&run_ok(get.arg(&out)));
    assert_eq!(std::fs::read(&out).unwrap(), data, "webrtc download differs");
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{report}");
    assert_eq!(peers[0]["transport"], "webrtc", "{report}");
    assert_eq!(peers[0]["node_id"], node_id(&sd), "{report}");

    let stats = seeder.stop();
    assert!(stats["webrtc_connections"].as_u64().unwrap() >= 1, "{stats}");
    assert!(served_bytes(&stats) >= data.len() as u64, "{stats}");
    // Hello and offer answered for each connection (the manifest's and the transfer's).
    assert!(stats["dht"]["signals_answered"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["dht"]["signals_refused"], 0, "{stats}");
    let relay = b0.stop();
    assert!(relay["dht"]["signals_relayed"].as_u64().unwrap() >= 2, "{relay}");
}

/// Sends one signal datagram to a node's DHT port and returns its answer, if one comes.
fn ask_signal(
    sock: &UdpSocket,
    node: SocketAddr,
    target: furymesh::dht::NodeId,
    signal: Vec<u8>,
) -> Option<furymesh::wire::SignalPacket> {
    use furymesh::wire::{
        decode_dht_datagram, encode_signal, DhtDatagram, SignalKind, SignalPacket,
    };
    let me = furymesh::dht::Contact {
        id: furymesh::dht::NodeId::from_bytes([9; 20]),
        addr: sock.local_addr().unwrap(),
    };
    let tx = furymesh::node::clock::random();
    let p =
        SignalPacket { tx, sender: me, kind: SignalKind::Signal, target, signal, relayed: false };
    let mut buf = Vec::new();
    encode_signal(&p, &mut buf);
    sock.send_to(&buf, node).unwrap();
    let mut rx = vec![0u8; 2048];
    loop {
        let (n, _) = sock.recv_from(&mut rx).ok()?;
        match decode_dht_datagram(&rx[..n]) {
            Ok(DhtDatagram::Signal(a)) if a.tx == tx && a.kind == SignalKind::Answer => {
                return Some(a)
            }
            _ => continue,
        }
    }
}

#[test]
fn tampered_replayed_and_misdirected_signals_at_a_seeder_open_no_channel() {
    use furymesh::crypto::signal::{
        CandidateKind, SignalCandidate, SignalInitiator, SignalPayload,
    };
    let t = tempdir();
    let sd = t.path().join("seed");
    let seeder = RtcSeeder::start(&sd, 1, &[]);
    let target: furymesh::dht::NodeId = node_id(&sd).parse().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let session = fixture_session(1);
    let now = unix_now();

    // A genuine Hello, sent straight to the seeder: answered, and the reply is signed by the
    // seeder's node (its certificate names the ID asked for).
    let (init, hello) =
        SignalInitiator::start(session.clone(), target, now, furymesh::node::clock::random());
    let reply = ask_signal(&sock, seeder.tcp, target, hello.clone()).expect("an answer");
    assert!(reply.relayed, "a genuine Hello is answered");
    let mut offerer = init.handle_reply(&reply.signal, now).expect("the seeder's reply verifies");
    assert_eq!(offerer.target(), target);
    // The same Hello again (a replay within the window): refused.
    let again = ask_signal(&sock, seeder.tcp, target, hello).expect("an answer");
    assert!(!again.relayed, "a replayed Hello is answered with nothing");
    // The offer with one bit flipped on the way (its fingerprint, its candidate: sealed):
    // refused; it used up the exchange, so even the genuine offer is refused after it.
    let payload = SignalPayload {
        candidates: vec![SignalCandidate {
            kind: CandidateKind::Host,
            addr: "127.0.0.1:9".parse().unwrap(),
        }],
        sdp: "v=0\r\na=fingerprint:sha-256 AA:BB\r\n".into(),
        browser: None,
    };
    let offer = offerer.seal_offer(&payload).unwrap();
    let mut tampered = offer.clone();
    tampered[30] ^= 1;
    assert!(!ask_signal(&sock, seeder.tcp, target, tampered).expect("an answer").relayed);
    assert!(!ask_signal(&sock, seeder.tcp, target, offer).expect("an answer").relayed);
    // A Hello signed for another node, and noise: nothing.
    let other = furymesh::dht::NodeId::from_bytes([1; 20]);
    let (_, misdirected) =
        SignalInitiator::start(session, other, now, furymesh::node::clock::random());
    let a = ask_signal(&sock, seeder.tcp, other, misdirected).expect("an answer");
    assert!(!a.relayed, "not relayed: the seeder does not know that node");
    assert!(!ask_signal(&sock, seeder.tcp, target, vec![1, 1, 0]).expect("an answer").relayed);

    let stats = seeder.stop();
    assert_eq!(stats["dht"]["signals_answered"], 1, "{stats}");
    assert_eq!(stats["dht"]["signals_refused"], 4, "{stats}");
    assert_eq!(stats["webrtc_offers"], 0, "{stats}");
    assert_eq!(stats["webrtc_connections"], 0, "{stats}");
}

/// Polls `dht find-providers` until `n` providers of `id` answer (a forming network).
fn wait_for_providers(dir: &Path, id: &str, via: &str, n: usize) -> serde_json::Value {
    for _ in 0..40 {
        let out = fm(dir)
            .args(["--json", "dht", "find-providers", id, "--bootstrap", via])
            .args(["--timeout-secs", "5"])
            .output()
            .unwrap();
        if out.status.success() {
            let found = json(&out);
            if found["contacts"].as_array().is_some_and(|c| c.len() >= n) {
                return found;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{n} providers of {id} never showed up");
}

#[test]
fn one_download_mixes_a_tcp_seeder_and_a_webrtc_only_seeder_found_through_the_dht() {
    let t = tempdir();
    let (boot, a, b, dd) =
        (t.path().join("boot"), t.path().join("a"), t.path().join("b"), t.path().join("dl"));
    let data = write_file(&t.path().join("f.bin"), (2 << 20) + 999, 11);
    let id = publish_id(&a, &t.path().join("f.bin"), &["--chunk-size", "64KiB"]);
    assert_eq!(publish_id(&b, &t.path().join("f.bin"), &["--chunk-size", "64KiB"]), id);
    let b0 = bootstrap_node(&boot);
    // A: TCP only, as every seeder before WebRTC, held to 256 KiB/s so that the download
    // still runs (8 s of A alone) when B's data channel opens (a set-up that ends after the
    // download completed is abandoned). B: WebRTC only (no TCP listener at all).
    let slow = ["--api", "off", "--max-upload-rate", "256KiB", "--bootstrap", &b0.peer()];
    let sa = Seeder::start_with_args(&a, 1, &slow);
    let sb = RtcSeeder::start(&b, 1, &["--no-tcp", "--bootstrap", &b0.peer()]);
    let found = wait_for_providers(&dd, &id, &b0.peer(), 2);
    let rows = found["contacts"].as_array().unwrap();
    let row = |addr: SocketAddr| rows.iter().find(|r| r["addr"] == addr.to_string()).unwrap();
    assert_eq!(
        (row(sa.addr)["tcp"].clone(), row(sa.addr)["webrtc"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(
        (row(sb.tcp)["tcp"].clone(), row(sb.tcp)["webrtc"].clone()),
        (false.into(), true.into())
    );
    // Nothing accepts TCP at B's address.
    assert!(std::net::TcpStream::connect(sb.tcp).is_err());

    // `auto`: TCP to A; to B, whose record offers no TCP, a data channel signaled through
    // the DHT. One download, both transports, byte-identical.
    let out = t.path().join("out.bin");
    let mut get = fm(&dd);
    get.args(["--json", "get", &id, "--transport", "auto", "--bootstrap", &b0.peer(), "-o"]);
    let report = json(&run_ok(get.arg(&out)));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let peers = report["peers"].as_array().unwrap();
    let by_addr = |addr: SocketAddr| {
        peers.iter().find(|p| p["addr"] == addr.to_string()).unwrap_or_else(|| panic!("{report}"))
    };
    assert_eq!(by_addr(sa.addr)["transport"], "tcp", "{report}");
    assert_eq!(by_addr(sb.tcp)["transport"], "webrtc", "{report}");
    assert!(by_addr(sb.tcp)["bytes"].as_u64().unwrap() > 0, "{report}");
    let total: u64 = peers.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    assert!(total >= data.len() as u64, "{report}");
    let (st_a, st_b) = (sa.stop(), sb.stop());
    assert_eq!(st_a["webrtc_connections"], 0, "{st_a}");
    assert!(st_b["webrtc_connections"].as_u64().unwrap() >= 1, "{st_b}");
    assert_eq!(st_b["connections"], st_b["webrtc_connections"], "{st_b}");
}
