//! The DHT between real nodes on loopback: discovery-driven `get`, resilience to a dead
//! node, rejoining from a saved routing table, hostile datagrams.

// These tests run real processes on real time: their deadlines read the clock directly
// (clippy.toml confines clock reads to node::clock inside the crate, not in tests).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

/// Polls `dht find-providers` through `via` until it lists `provider` (announcements are
/// paced and travel the chain) or the deadline passes.
fn wait_for_provider(data: &std::path::Path, id: &str, via: &str, provider: &str) {
    wait_for_provider_with(data, id, via, provider, &[]);
}

/// [`wait_for_provider`] with extra global flags (e.g. `--network-secret`).
fn wait_for_provider_with(
    data: &std::path::Path,
    id: &str,
    via: &str,
    provider: &str,
    extra: &[&str],
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = fm(data)
            .args(extra)
            .args([
                "--json",
                "dht",
                "find-providers",
                id,
                "--bootstrap",
                via,
                "--timeout-secs",
                "5",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            let v = json(&out);
            if v["contacts"].as_array().unwrap().iter().any(|c| c["addr"] == provider) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "provider never appeared: {}", stderr_of(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn twelve_nodes_in_a_chain_find_and_serve_a_file_even_after_one_dies() {
    let t = tempdir();
    let f = t.path().join("release.iso");
    let bytes = write_file(&f, 3 << 20, 12);
    let dirs: Vec<_> = (0..12).map(|i| t.path().join(format!("node{i}"))).collect();
    let id = publish_id(&dirs[0], &f, &[]);

    // Node i joins through node i-1 only.
    let mut nodes: Vec<Option<Seeder>> = Vec::new();
    for d in &dirs {
        let boot: Vec<String> = match nodes.last() {
            Some(Some(prev)) => vec![prev.peer()],
            _ => vec![],
        };
        nodes.push(Some(Seeder::start_with(d, 1, "127.0.0.1:0", &boot)));
    }
    let peer = |i: usize| nodes[i].as_ref().unwrap().peer();
    let provider = peer(0);
    let last = peer(11);
    wait_for_provider(&dirs[11], &id, &last, &provider);

    // `get` knows only the far end of the chain.
    let out = t.path().join("via-dht.iso");
    let r = json(&run_ok(
        fm(&dirs[11]).args(["--json", "get", &id, "--bootstrap", &last, "-o"]).arg(&out),
    ));
    assert_eq!(r["bytes"], bytes.len() as u64);
    assert!(fs::read(&out).unwrap() == bytes);

    // A node in the middle of the chain dies without a goodbye.
    nodes[6].take().unwrap().kill9();
    let out2 = t.path().join("after-kill.iso");
    run_ok(fm(&dirs[11]).args(["--json", "get", &id, "--bootstrap", &last, "-o"]).arg(&out2));
    assert!(fs::read(&out2).unwrap() == bytes);

    // A restarted node rejoins through the routing table it saved, with no bootstrap.
    let n3 = nodes[3].take().unwrap();
    let stats = n3.stop();
    assert!(stats["dht"]["table_len"].as_u64().unwrap() > 0, "{stats}");
    assert!(dirs[3].join("dht-table.fmt").exists());
    // (On a fresh port: the old one may have been taken by a client meanwhile.)
    let n3 = Seeder::start_with(&dirs[3], 1, "127.0.0.1:0", &[]);
    wait_for_provider(&dirs[3], &id, &n3.peer(), &provider);
    drop(n3);

    let stats = nodes[0].take().unwrap().stop();
    assert!(stats["dht"]["announcements"].as_u64().unwrap() >= 1, "{stats}");
}

#[test]
fn hostile_datagrams_are_dropped_and_counted_and_the_node_keeps_answering() {
    let t = tempdir();
    let data = t.path().join("data");
    let node = Seeder::start_with(&data, 1, "127.0.0.1:0", &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = 0x9e37_79b9_u64;
    for i in 0..300 {
        let len = (i * 37) % 1600 + 1;
        sock.send_to(&junk(len, &mut x), node.addr).unwrap();
        // Paced so the kernel's receive buffer does not drop them before the node sees them.
        std::thread::sleep(Duration::from_micros(300));
    }
    // Right magic, garbage after it.
    sock.send_to(&[0xFD, b'F', b'M', 1, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3], node.addr).unwrap();
    let ping = fm(&data).args(["--json", "dht", "ping", &node.peer()]).output().unwrap();
    assert!(ping.status.success(), "{}", stderr_of(&ping));
    assert_eq!(json(&ping)["node_id"].as_str().unwrap().len(), 40);
    let stats = node.stop();
    assert!(stats["dht"]["bad_datagrams"].as_u64().unwrap() >= 250, "{stats}");

    // Nobody listening: a clear failure, not a hang.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let r = fm(&data).args(["dht", "ping", &dead]).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("no DHT node answered"), "{}", stderr_of(&r));
    let r = fm(&data)
        .args(["get", &"ab".repeat(32), "--bootstrap", &dead, "-o"])
        .arg(t.path().join("x"))
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("no DHT node answered"), "{}", stderr_of(&r));
}

/// Sends `msg` (with `proof`) to `to` and returns whether the node stored the record (an
/// `AnnounceAck { stored: true }` came back) — a dropped announcement gets no answer.
fn announce(
    sock: &UdpSocket,
    to: std::net::SocketAddr,
    msg: &furymesh::dht::DhtMessage,
    proof: Option<&furymesh::wire::AnnounceProof>,
) -> bool {
    use furymesh::dht::DhtBody;
    let mut buf = Vec::new();
    furymesh::wire::encode_dht_proved(msg, proof, &mut buf);
    assert!(buf.len() <= furymesh::wire::DHT_DATAGRAM_MAX_BYTES, "{} bytes", buf.len());
    sock.send_to(&buf, to).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut rx = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut rx) {
        if let Ok(reply) = furymesh::wire::decode_dht(&rx[..n]) {
            if reply.tx == msg.tx {
                return matches!(reply.body, DhtBody::AnnounceAck { stored: true });
            }
        }
    }
    false
}

#[test]
fn forged_provider_records_are_ignored() {
    use furymesh::crypto::{sign_provider_record, FileId};
    use furymesh::dht::{Contact, DhtBody, DhtMessage, Key, NodeId};
    use furymesh::wire::{provider_addr_bytes, AnnounceProof};

    let t = tempdir();
    let data = t.path().join("data");
    // The node must be neither the attacker nor the victim (fixtures 14 and 15), whichever
    // fixture its turn would hand out (the turn depends on the tests run before).
    fs::create_dir_all(&data).unwrap();
    let key = data.join("identity.pk8.der");
    fs::copy(fixture_identity(13), &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let node = Seeder::start_with(&data, 1, "127.0.0.1:0", &[]);
    let file_id = FileId([9; 32]);
    let key = Key::from_file_id(&file_id);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    // The attacker holds fixture identity 14; the victim it would impersonate is 15.
    let attacker = fixture_session(14);
    let victim = fixture_session(15).node_id();
    let msg = |id: NodeId, tx: u64| {
        let c = Contact { id, addr: me };
        DhtMessage {
            tx,
            sender: c,
            body: DhtBody::AnnounceProvider { key, provider: c },
            read_only: false,
        }
    };
    let expires = unix_now() + 3600;
    let proof = |signed_key: [u8; 20], signed_addr: std::net::SocketAddr| AnnounceProof {
        certificate: attacker.certificate_bytes().to_vec(),
        expires,
        signature: sign_provider_record(
            &attacker,
            &signed_key,
            &provider_addr_bytes(signed_addr),
            expires,
        ),
    };
    let good = proof(*key.as_bytes(), me);
    let other_addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Unsigned, or signed by someone else for the victim's ID, or signed for another key,
    // another address, or a later expiry: all dropped.
    assert!(!announce(&sock, node.addr, &msg(victim, 1), None));
    assert!(!announce(&sock, node.addr, &msg(victim, 2), Some(&good)));
    assert!(!announce(&sock, node.addr, &msg(attacker.node_id(), 3), Some(&proof([1; 20], me))));
    assert!(!announce(
        &sock,
        node.addr,
        &msg(attacker.node_id(), 4),
        Some(&proof(*key.as_bytes(), other_addr))
    ));
    let stretched = AnnounceProof { expires: expires + 1, ..good.clone() };
    assert!(!announce(&sock, node.addr, &msg(attacker.node_id(), 5), Some(&stretched)));
    // A genuine signed record replayed from another address: refused (it would be stored
    // under the address it came from, which nobody signed).
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(!announce(&elsewhere, node.addr, &msg(attacker.node_id(), 7), Some(&good)));
    // The control: the same node announcing itself with its own signature is stored.
    assert!(announce(&sock, node.addr, &msg(attacker.node_id(), 6), Some(&good)));

    let out = run_ok(fm(&data).args([
        "--json",
        "dht",
        "find-providers",
        &file_id.to_hex(),
        "--bootstrap",
        &node.peer(),
    ]));
    let found = json(&out);
    let ids: Vec<_> =
        found["contacts"].as_array().unwrap().iter().map(|c| c["node_id"].clone()).collect();
    assert_eq!(ids, vec![serde_json::Value::from(attacker.node_id().to_string())], "{found}");
    let stats = node.stop();
    assert_eq!(stats["dht"]["announcements_rejected"], 6, "{stats}");
}

#[test]
fn a_private_network_dht_ignores_outsiders() {
    let t = tempdir();
    let (data, outsider, client) =
        (t.path().join("private"), t.path().join("outsider"), t.path().join("client"));
    let (secret, wrong) = (t.path().join("net.secret"), t.path().join("wrong.secret"));
    fs::write(&secret, "private network secret, 32 bytes").unwrap();
    fs::write(&wrong, "another network's secret, 32 b..").unwrap();
    let f = t.path().join("f.bin");
    let bytes = write_file(&f, 400_000, 8);
    let id = publish_id(&data, &f, &[]);
    let s = secret.display().to_string();
    let node = Seeder::start_with_args(&data, 1, &["--network-secret", &s]);
    // A second member of the network, so the announcement has somewhere to go.
    let member = Seeder::start_with_args(
        &t.path().join("member"),
        1,
        &["--network-secret", &s, "--bootstrap", &node.peer()],
    );
    // An outsider node tries to join through it, and would land in its table if it could.
    let out_node = Seeder::start_with(&outsider, 1, "127.0.0.1:0", &[node.peer()]);

    let dht = |extra: &[&str], args: &[&str]| {
        fm(&client).args(extra).args(["--json", "dht"]).args(args).output().unwrap()
    };
    let w = wrong.display().to_string();
    // Without the secret, and with the wrong one: no answer (each check costs its timeout,
    // so one of each).
    let r = dht(&[], &["ping", &node.peer()]);
    assert!(!r.status.success(), "ping answered without the secret");
    assert!(stderr_of(&r).contains("no DHT node answered"), "{}", stderr_of(&r));
    let r = dht(
        &["--network-secret", &w],
        &["find-providers", &id, "--bootstrap", &node.peer(), "--timeout-secs", "3"],
    );
    assert!(!r.status.success(), "query answered with the wrong secret");
    let r = dht(&["--network-secret", &s], &["ping", &node.peer()]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    wait_for_provider_with(&client, &id, &node.peer(), &node.peer(), &["--network-secret", &s]);
    // The whole path inside the network: providers through the DHT, transfer with the secret.
    let o = t.path().join("o.bin");
    run_ok(
        fm(&client)
            .args(["--network-secret", &s, "get", &id, "--bootstrap", &node.peer(), "-o"])
            .arg(&o),
    );
    assert!(fs::read(&o).unwrap() == bytes);
    out_node.stop();
    member.stop();
    let stats = node.stop();
    // Only the member got into the routing table; the outsiders' datagrams were counted.
    assert_eq!(stats["dht"]["table_len"], 1, "{stats}");
    assert!(stats["dht"]["wrong_network"].as_u64().unwrap() >= 3, "{stats}");
}

/// `get FILE_ID --bootstrap via` from the client data dir into a fresh file; checks the
/// bytes. `what` names the step in a failure.
fn get_via(t: &std::path::Path, id: &str, via: &str, bytes: &[u8], what: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let out = t.join(format!("got-{}.bin", N.fetch_add(1, Ordering::Relaxed)));
    let r = fm(&t.join("client"))
        .args(["--json", "get", id, "--bootstrap", via, "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{what}: get through {via} failed: {}", stderr_of(&r));
    assert!(fs::read(&out).unwrap() == bytes, "{what}: wrong bytes");
}

/// Stops a seeder and starts it again on the same address (as a restarted server keeps
/// its port), with the same data dir (identity, saved routing table) and `bootstrap`.
fn restart(s: Seeder, dir: &std::path::Path, bootstrap: &[String]) -> Seeder {
    let addr = s.peer();
    s.stop();
    // Tests run in parallel: an outgoing connection of another test may hold the port as
    // its local port for a moment. Retry until it is free again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Seeder::start_with(dir, 1, &addr, bootstrap)
        }));
        match started {
            Ok(seeder) => return seeder,
            Err(e) if Instant::now() >= deadline => std::panic::resume_unwind(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Issue 12 item 1: `seed` on A, then `get --bootstrap A` right away must work — in a
/// network of one node, of two and of three, through every node, before and after each
/// node restarts (a restarted node has lost the provider records it stored for others).
#[test]
fn a_provider_is_found_in_networks_of_one_two_and_three_nodes_across_restarts() {
    let t = tempdir();
    let f = t.path().join("f.bin");
    let bytes = write_file(&f, 300_000, 21);
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| t.path().join(n)).collect();
    let id = publish_id(&dirs[0], &f, &[]);
    let get = |via: &Seeder, what: &str| get_via(t.path(), &id, &via.peer(), &bytes, what);

    // One node: the provider alone, asked right after it started.
    let mut a = Seeder::start(&dirs[0], 1);
    get(&a, "network of 1");
    a = restart(a, &dirs[0], &[]);
    get(&a, "network of 1, provider restarted");

    // Two nodes: B joins through A; ask through either, right away.
    let mut b = Seeder::start_with(&dirs[1], 1, "127.0.0.1:0", &[a.peer()]);
    let boot_b = vec![a.peer()];
    get(&b, "network of 2, via the new node");
    get(&a, "network of 2, via the provider");
    b = restart(b, &dirs[1], &boot_b);
    get(&b, "network of 2, other node restarted");
    a = restart(a, &dirs[0], &[]);
    get(&b, "network of 2, provider restarted");
    get(&a, "network of 2, provider restarted, via it");

    // Three nodes: C joins through B only.
    let boot_c = vec![b.peer()];
    let mut c = Seeder::start_with(&dirs[2], 1, "127.0.0.1:0", &boot_c);
    for (node, name) in [(&c, "C"), (&b, "B"), (&a, "A")] {
        get(node, &format!("network of 3, via {name}"));
    }
    b = restart(b, &dirs[1], &boot_b);
    c = restart(c, &dirs[2], &boot_c);
    get(&c, "network of 3, B and C restarted");
    a = restart(a, &dirs[0], &[]);
    for (node, name) in [(&c, "C"), (&b, "B"), (&a, "A")] {
        get(node, &format!("network of 3, all restarted, via {name}"));
    }
    let stats = a.stop();
    assert!(stats["dht"]["table_len"].as_u64().unwrap() >= 1, "{stats}");
    drop((b, c));
}

/// Issue 12 item 10: a genuine DHT request replayed with one bit flipped in the sender
/// ID, from an address where nothing answers, must not enter the node's routing table —
/// nor reach the lookups of clients that join through it.
#[test]
fn a_forged_request_does_not_poison_the_routing_table() {
    use furymesh::dht::{Contact, DhtBody, DhtMessage, NodeId};
    let t = tempdir();
    let (da, db, client) = (t.path().join("a"), t.path().join("b"), t.path().join("client"));
    let a = Seeder::start(&da, 1);
    let b = Seeder::start_with(&db, 1, "127.0.0.1:0", &[a.peer()]);
    let b_id: NodeId = node_id(&db).parse().unwrap();
    let lookup = || {
        let target = "5d".repeat(20);
        json(&run_ok(
            fm(&client).args(["--json", "dht", "find-node", &target, "--bootstrap"]).arg(a.peer()),
        ))
    };
    // A knows B once B answered its check: poll (B's join is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = lookup();
        if found["contacts"].as_array().unwrap().iter().any(|c| c["addr"] == b.peer()) {
            break;
        }
        assert!(Instant::now() < deadline, "B never appeared in A's table: {found}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The request B sends when it joins, as it goes on the wire, from a socket that closes
    // right after — then one bit of the sender ID flipped in the datagram itself.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let request = DhtMessage {
        tx: 0x0123_4567_89ab_cdef,
        sender: Contact { id: b_id, addr: sock.local_addr().unwrap() },
        body: DhtBody::FindNode { target: b_id },
        read_only: false,
    };
    let mut datagram = Vec::new();
    furymesh::wire::encode_dht(&request, &mut datagram);
    let at = datagram.windows(20).position(|w| w == b_id.as_bytes()).expect("sender id");
    datagram[at + 19] ^= 0x01;
    sock.send_to(&datagram, a.addr).unwrap();
    drop(sock);

    // Lookups through A meet only nodes that answer: every request sent gets its reply.
    for _ in 0..3 {
        let found = lookup();
        assert_eq!(found["requests_sent"], found["responses_received"], "{found}");
        assert_eq!(found["contacts"].as_array().unwrap().len(), 2, "{found}");
    }
    b.stop();
    let stats = a.stop();
    assert_eq!(stats["dht"]["table_len"], 1, "only B entered A's table: {stats}");
    assert!(stats["dht"]["contacts_verify_pings"].as_u64().unwrap() >= 2, "{stats}");
}

/// Issue 11: a `dht` query or a `get` given no bootstrap node and no peer, on a data
/// directory where a seed runs, joins the DHT through that seed (its routing table), and
/// finds and downloads a file another node provides. Without a seed there, `get` says where
/// it could download from instead of guessing.
#[test]
fn commands_without_bootstrap_join_through_the_seed_running_on_their_data_directory() {
    let t = tempdir();
    let f = t.path().join("release.bin");
    let bytes = write_file(&f, 300_000, 11);
    let (a_dir, b_dir, lone) = (t.path().join("a"), t.path().join("b"), t.path().join("lone"));
    let id = publish_id(&a_dir, &f, &[]);
    let a = Seeder::start_with_args(&a_dir, 1, &["--api", "127.0.0.1:0"]);
    let b = Seeder::start_with_args(&b_dir, 1, &["--api", "127.0.0.1:0", "--bootstrap", &a.peer()]);
    wait_for_provider(&b_dir, &id, &b.peer(), &a.peer());

    // The query, with no --bootstrap: through the seed on b_dir.
    let out = run_ok(fm(&b_dir).args(["--json", "dht", "find-providers", &id]));
    let v = json(&out);
    assert!(
        v["contacts"].as_array().unwrap().iter().any(|c| c["addr"] == a.peer().as_str()),
        "{v}"
    );
    assert!(stderr_of(&out).contains("joining through the seed running on"), "{}", stderr_of(&out));

    // The download, with neither --peer nor --bootstrap.
    let dest = t.path().join("got.bin");
    let out = run_ok(fm(&b_dir).args(["--json", "get", &id, "-o"]).arg(&dest));
    assert_eq!(fs::read(&dest).unwrap(), bytes, "not byte-identical");
    assert!(stderr_of(&out).contains("through the seed running here"), "{}", stderr_of(&out));

    // No seed on this data directory: a clear error, not a guess.
    let out = fm(&lone).args(["get", &id, "-o"]).arg(t.path().join("x")).output().unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("nowhere to download from") && err.contains("no node"), "{err}");
    let out = fm(&lone).args(["dht", "find-providers", &id]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("give --bootstrap"), "{}", stderr_of(&out));
}
