//! The DHT between real nodes on loopback: discovery-driven `get`, resilience to a dead
//! node, rejoining from a saved routing table, hostile datagrams.

mod common;

use std::fs;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

/// Polls `dht find-providers` through `via` until it lists `provider` (announcements are
/// paced and travel the chain) or the deadline passes.
fn wait_for_provider(data: &std::path::Path, id: &str, via: &str, provider: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = fm(data)
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
    for (i, d) in dirs.iter().enumerate() {
        let boot: Vec<String> = match nodes.last() {
            Some(Some(prev)) => vec![prev.peer()],
            _ => vec![],
        };
        nodes.push(Some(Seeder::start_with(d, 1, "127.0.0.1:0", &boot)));
        assert_eq!(i + 1, nodes.len());
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
