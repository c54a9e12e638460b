//! A node of a 12-node DHT under a flood of hostile datagrams (issue 17, "DHT under
//! attack"): random bytes, truncated and oversized datagrams, well-formed requests from
//! thousands of made-up node IDs, replies nobody asked for, and one genuinely signed
//! provider announcement replayed over and over from other addresses. Every node stays up,
//! the target's memory stays flat, the forged contacts never reach lookups, and a lookup
//! through the target still finds the real provider.
//!
//! The flood's size is `FURYMESH_DHT_ATTACK_DATAGRAMS` (default 2,000 here, in CI);
//! `scripts/dht-attack` runs it with 10,000 and more and prints the figures.

// Real processes on real time: deadlines read the clock (see tests/dht.rs).
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use furymesh::crypto::sign_provider_record;
use furymesh::dht::{Contact, DhtBody, DhtMessage, Key, NodeId};
use furymesh::wire::{encode_dht, encode_dht_proved, provider_addr_bytes, AnnounceProof};

/// Resident memory of a process, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `dht find-providers ID` through `via`: the providers' addresses, or None on failure.
fn providers(data: &std::path::Path, id: &str, via: &str) -> Option<Vec<String>> {
    let out = fm(data)
        .args(["--json", "dht", "find-providers", id, "--bootstrap", via, "--timeout-secs", "5"])
        .output()
        .unwrap();
    out.status.success().then(|| {
        json(&out)["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["addr"].as_str().unwrap().to_owned())
            .collect()
    })
}

/// Polls until `provider` is among the providers found through `via`.
fn wait_for_provider(data: &std::path::Path, id: &str, via: &str, provider: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if providers(data, id, via).is_some_and(|p| p.iter().any(|a| a == provider)) {
            return;
        }
        assert!(Instant::now() < deadline, "provider {provider} never appeared through {via}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One hostile datagram of kind `i % 6`.
fn hostile(i: usize, x: &mut u64, me: SocketAddr, replayed: &[u8]) -> Vec<u8> {
    let random_bytes = |x: &mut u64| {
        let mut b = [0u8; 20];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&xorshift(x).to_le_bytes()[..c.len()]);
        }
        b
    };
    let random_id = |x: &mut u64| NodeId::from_bytes(random_bytes(x));
    let request = |x: &mut u64| {
        let sender = Contact { id: random_id(x), addr: me };
        let body = match xorshift(x) % 3 {
            0 => DhtBody::Ping,
            1 => DhtBody::FindNode { target: random_id(x) },
            _ => DhtBody::GetProviders { key: Key::from_bytes(random_bytes(x)) },
        };
        let mut buf = Vec::new();
        encode_dht(&DhtMessage { tx: xorshift(x), sender, body, read_only: false }, &mut buf);
        buf
    };
    match i % 6 {
        // Random bytes of every length up to a large datagram.
        0 => junk((xorshift(x) % 1600 + 1) as usize, x),
        // A well-formed request from a node ID nobody has (a Sybil's cheapest move).
        1 => request(x),
        // The same, cut short.
        2 => {
            let mut b = request(x);
            let keep = (xorshift(x) as usize) % b.len();
            b.truncate(keep);
            b
        }
        // Oversized: far beyond any DHT message.
        3 => junk(8_000 + (xorshift(x) % 50_000) as usize, x),
        // A reply nobody asked for, offering forged contacts.
        4 => {
            let contacts = (0..8)
                .map(|p| Contact {
                    id: random_id(x),
                    addr: SocketAddr::from(([127, 0, 0, 1], 9 + p)),
                })
                .collect();
            let sender = Contact { id: random_id(x), addr: me };
            let mut buf = Vec::new();
            let body = DhtBody::Nodes { contacts };
            encode_dht(&DhtMessage { tx: xorshift(x), sender, body, read_only: false }, &mut buf);
            buf
        }
        // A genuinely signed announcement, replayed (from another address than it names).
        _ => replayed.to_vec(),
    }
}

#[test]
fn a_dht_node_under_a_datagram_flood_stays_up_flat_and_useful() {
    let datagrams: usize = std::env::var("FURYMESH_DHT_ATTACK_DATAGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let t = tempdir();
    let f = t.path().join("release.iso");
    write_file(&f, 1 << 20, 17);
    let dirs: Vec<_> = (0..12).map(|i| t.path().join(format!("node{i}"))).collect();
    let id = publish_id(&dirs[0], &f, &[]);
    // Node i joins through node i-1 only.
    let mut nodes: Vec<Seeder> = Vec::new();
    for d in &dirs {
        let boot: Vec<String> = nodes.last().map(|p: &Seeder| vec![p.peer()]).unwrap_or_default();
        nodes.push(Seeder::start_with(d, 1, "127.0.0.1:0", &boot));
    }
    let provider = nodes[0].peer();
    let target = &nodes[6];
    wait_for_provider(&dirs[11], &id, &target.peer(), &provider);

    // The replayed announcement: fixture identity 14 announcing a file, signed for the
    // address of a socket that then never sends it (the flood comes from others).
    let signer = fixture_session(14);
    let signed_from = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let replay_file = furymesh::crypto::FileId([7; 32]);
    let key = Key::from_file_id(&replay_file);
    let expires = unix_now() + 3600;
    let me = Contact { id: signer.node_id(), addr: signed_from };
    let proof = AnnounceProof {
        certificate: signer.certificate_bytes().to_vec(),
        expires,
        signature: sign_provider_record(
            &signer,
            key.as_bytes(),
            &provider_addr_bytes(signed_from),
            expires,
        ),
    };
    let msg = DhtMessage {
        tx: 1,
        sender: me,
        body: DhtBody::AnnounceProvider { key, provider: me },
        read_only: false,
    };
    let mut replayed = Vec::new();
    encode_dht_proved(&msg, Some(&proof), &mut replayed);

    // The flood, from 16 sockets, in two halves: memory is read after each.
    let socks: Vec<UdpSocket> = (0..16).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let rss_start = rss_kib(target.pid());
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut rss_half = 0;
    for i in 0..datagrams {
        let s = &socks[i % socks.len()];
        let _ = s.send_to(&hostile(i, &mut x, s.local_addr().unwrap(), &replayed), target.addr);
        // Paced a little, so the node reads most of them rather than the kernel dropping
        // them from a full receive buffer.
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_micros(800));
        }
        if i == datagrams / 2 {
            rss_half = rss_kib(target.pid());
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_end = rss_kib(target.pid());
    eprintln!(
        "dht attack: {datagrams} datagrams; target RSS {rss_start} KiB before, {rss_half} KiB \
         halfway, {rss_end} KiB after"
    );

    // Still useful: a lookup through the target finds the real provider and none of the
    // forged contacts or the replayed announcement's key holder.
    let found = providers(&dirs[11], &id, &target.peer()).expect("lookup through the target");
    assert!(found.contains(&provider), "{found:?}");
    assert!(found.iter().all(|a| !a.ends_with(":9") && *a != signed_from.to_string()), "{found:?}");
    let stored = providers(&dirs[11], &replay_file.to_hex(), &target.peer()).unwrap_or_default();
    assert!(stored.is_empty(), "the replayed announcement was stored: {stored:?}");
    // A fresh `get` through the far end still completes.
    let out = t.path().join("after.iso");
    run_ok(
        fm(&dirs[11])
            .args(["--json", "get", &id, "--bootstrap", &nodes[11].peer(), "-o"])
            .arg(&out),
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&f).unwrap());

    // Flat: the second half of the flood grew the target by less than 2 MiB.
    assert!(
        rss_end < rss_half + 2048,
        "target RSS grew from {rss_half} to {rss_end} KiB in the second half of the flood"
    );
    // Every node is still up, and the target counted what it dropped.
    for (i, n) in nodes.iter_mut().enumerate() {
        assert!(n.is_running(), "node {i} died");
    }
    let stats = nodes.swap_remove(6).stop();
    let dht = &stats["dht"];
    let dropped =
        dht["bad_datagrams"].as_u64().unwrap() + dht["announcements_rejected"].as_u64().unwrap();
    eprintln!("dht attack: target stats {dht}");
    assert!(dropped > 0, "{dht}");
    // None of the thousands of made-up senders entered the routing table: only the 11
    // real nodes can be in it (a contact enters only after answering a ping).
    assert!(dht["table_len"].as_u64().unwrap() <= 11, "{dht}");
}
