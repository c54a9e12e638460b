//! The node through its handle, in one test process: publish and unpublish while serving,
//! several downloads in one node, live counters, failures counted by blame. Real shards,
//! real sockets on loopback, real files.
// Waits for events read the wall clock (the lint confines it to node::clock in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{downloading_node, get_options, node_security, tempdir, write_file};
use furymesh::crypto::FileId;
use furymesh::node::{self, GetError, Handle, Node, NodeOptions, NodeStats, PeerAddr};

/// A serving node on loopback with a data directory (its catalog), one shard.
fn seeder(dir: &Path, upload_rate: Option<u64>) -> Node {
    let opts = NodeOptions {
        upload_rate_bytes: upload_rate,
        data_dir: Some(dir.to_owned()),
        ..NodeOptions::new(Some("127.0.0.1:0".parse().unwrap()), 1, node_security(dir))
    };
    Node::start(Vec::new(), &opts).unwrap()
}

fn publish(h: &Handle, path: &Path) -> FileId {
    let results = h.publish(&[path.to_owned()], Some(64 << 10), &|_| {}).unwrap();
    results.into_iter().next().unwrap().unwrap().entry.info.file_id
}

fn get(h: &Handle, id: FileId, peer: PeerAddr, out: PathBuf) -> Result<node::GetReport, GetError> {
    h.get(get_options(h, id, peer, out), Arc::new(AtomicBool::new(false)), Box::new(|_| {}))
}

/// Polls `h.stats()` until `ok` holds (at most 30 s: a wait for an event, not a timing
/// claim).
fn stats_until(h: &Handle, ok: impl Fn(&NodeStats) -> bool) -> NodeStats {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = h.stats().unwrap();
        if ok(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn addr(n: &Node) -> SocketAddr {
    n.addr().unwrap()
}

/// While node B downloads a large file from node A (rate-limited so it runs for seconds),
/// A publishes a new file and unpublishes another through its handle: B gets the new file
/// at once from the same A, the unpublished one is refused as unknown, A's counters rise
/// between two snapshots, and the long download completes byte-identical with no error.
#[test]
fn publish_and_unpublish_while_a_download_runs() {
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    let big = write_file(&t.path().join("big.bin"), 12 << 20, 1);
    let new = write_file(&t.path().join("new.bin"), 300 << 10, 2);
    write_file(&t.path().join("old.bin"), 200 << 10, 3);
    let a = seeder(&sd, Some(4 << 20));
    let (ha, peer) = (a.handle(), PeerAddr::from(addr(&a)));
    let big_id = publish(&ha, &t.path().join("big.bin"));
    let old_id = publish(&ha, &t.path().join("old.bin"));
    let b = downloading_node(&dd, 2);
    let hb = b.handle();

    let out_big = t.path().join("big.out");
    let stop = Arc::new(AtomicBool::new(false));
    let dl = hb.download(get_options(&hb, big_id, peer, out_big.clone()), stop, Box::new(|_| {}));
    let dl = dl.unwrap();
    let first = stats_until(&ha, |s| s.serving.chunks_served > 0 && s.serving.connections_open > 0);
    assert!(first.serving.chunks_served > 0, "{first:?}");
    assert_eq!(hb.status(dl).unwrap().state, "running");

    // Publish while serving: served at once, no restart.
    let new_id = publish(&ha, &t.path().join("new.bin"));
    let r = get(&hb, new_id, peer, t.path().join("new.out")).expect("new file served");
    assert_eq!(fs::read(t.path().join("new.out")).unwrap(), new);
    assert_eq!(r.chunks_fetched, 5);

    // Unpublish while serving: refused as unknown from now on.
    assert!(ha.unpublish(&old_id).unwrap());
    match get(&hb, old_id, peer, t.path().join("old.out")) {
        Err(GetError::UnknownFile { file_id, .. }) => assert_eq!(file_id, old_id),
        other => panic!("unpublished file: {other:?}"),
    }
    assert!(!ha.unpublish(&old_id).unwrap(), "unpublished twice");

    // The long download was not disturbed, and A's counters kept rising meanwhile.
    let later = stats_until(&ha, |s| s.serving.chunks_served > first.serving.chunks_served);
    assert!(later.serving.chunks_served > first.serving.chunks_served);
    assert_eq!(later.files_served, 2, "{later:?}");
    let report = hb.wait(dl).unwrap().expect("long download");
    assert_eq!(fs::read(&out_big).unwrap(), big);
    assert!(report.peers.iter().all(|p| p.error.is_none() && !p.banned), "{:?}", report.peers);
    let s = hb.stats().unwrap();
    assert_eq!((s.downloading.started, s.downloading.completed, s.downloading.failed), (3, 2, 1));
}

/// Two downloads run at once in one node, over its shards, each verified and complete.
#[test]
fn two_downloads_in_one_node() {
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    let one = write_file(&t.path().join("one.bin"), 3 << 20, 4);
    let two = write_file(&t.path().join("two.bin"), 2 << 20, 5);
    let a = seeder(&sd, Some(8 << 20));
    let (ha, peer) = (a.handle(), PeerAddr::from(addr(&a)));
    let ids = [publish(&ha, &t.path().join("one.bin")), publish(&ha, &t.path().join("two.bin"))];
    let b = downloading_node(&dd, 2);
    let hb = b.handle();
    let dls: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let out = t.path().join(format!("out{i}"));
            let opts = get_options(&hb, *id, peer, out);
            hb.download(opts, Arc::new(AtomicBool::new(false)), Box::new(|_| {})).unwrap()
        })
        .collect();
    // Both run at once in the one node (the seeder's 8 MiB/s limit keeps each going for
    // a good part of a second).
    assert_eq!(hb.stats().unwrap().downloads_active, 2);
    for dl in dls {
        hb.wait(dl).unwrap().expect("download");
    }
    assert_eq!(hb.stats().unwrap().downloads_active, 0);
    assert_eq!(fs::read(t.path().join("out0")).unwrap(), one);
    assert_eq!(fs::read(t.path().join("out1")).unwrap(), two);
    let s = b.shutdown();
    assert_eq!(s.downloading.completed, 2);
    assert_eq!(s.downloading.bytes_verified, (5 << 20) as u64);
}

/// A client that sends junk instead of a handshake is counted on the serving side as a
/// handshake failure by the peer's fault; a download that pins the wrong node ID is counted
/// on the downloading side the same way.
#[test]
fn handshake_failures_are_counted_with_their_blame() {
    use std::io::Write;
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    write_file(&t.path().join("f.bin"), 100 << 10, 6);
    let a = seeder(&sd, None);
    let ha = a.handle();
    let id = publish(&ha, &t.path().join("f.bin"));
    let mut s = std::net::TcpStream::connect(addr(&a)).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    drop(s);
    let st = stats_until(&ha, |s| s.serving.handshakes_failed > 0);
    assert_eq!(st.serving.handshakes_failed_peer, 1, "{st:?}");
    assert_eq!(st.serving.handshakes_failed_local, 0, "{st:?}");

    let b = downloading_node(&dd, 2);
    let hb = b.handle();
    // B's own node ID: certainly not A's.
    let wrong = PeerAddr { addr: addr(&a), node_id: Some(hb.security().node_id()) };
    match get(&hb, id, wrong, t.path().join("out")) {
        Err(GetError::WrongNode { .. }) => {}
        other => panic!("wrong pin: {other:?}"),
    }
    let st = hb.stats().unwrap();
    assert!(st.downloading.handshakes_failed_peer >= 1, "{st:?}");
    assert_eq!(st.downloading.handshakes_failed_local, 0, "{st:?}");
}

/// A seeder whose file was altered behind its back (size and mtime put back) sends chunks
/// that fail verification: the downloading node bans it and counts the corrupt chunks and
/// the ban.
#[test]
fn a_ban_is_counted() {
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    let f = t.path().join("f.bin");
    let mut bytes = write_file(&f, 1 << 20, 7);
    let a = seeder(&sd, None);
    let ha = a.handle();
    let id = publish(&ha, &f);
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    for c in 0..16 {
        bytes[c * (64 << 10) + 7] ^= 0x55;
    }
    fs::write(&f, &bytes).unwrap();
    fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();

    let b = downloading_node(&dd, 2);
    let hb = b.handle();
    let result = get(&hb, id, addr(&a).into(), t.path().join("out"));
    assert!(matches!(result, Err(GetError::HashMismatch { .. })), "{result:?}");
    let st = hb.stats().unwrap();
    assert!(st.downloading.peers_banned >= 1, "{st:?}");
    assert!(st.downloading.chunks_corrupt >= 1, "{st:?}");
    assert_eq!(st.downloading.failed, 1, "{st:?}");
}

/// Polls `cmd` until it succeeds (at most 10 s) and returns its output.
fn until_ok(mut cmd: impl FnMut() -> std::process::Command) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cmd().output().unwrap();
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The operator's path: `seed` runs; `publish` and `unpublish` are run as separate commands
/// on its data directory. The running seeder serves the new file and refuses the
/// unpublished one without a restart.
#[test]
fn a_running_seed_follows_publish_and_unpublish_commands() {
    use common::{fm, get_cmd, json, publish_id, run_ok, stderr_of, Seeder};
    let t = tempdir();
    let data = t.path().join("seed");
    let first = write_file(&t.path().join("first.bin"), 100 << 10, 8);
    let first_id = publish_id(&data, &t.path().join("first.bin"), &[]);
    let seeder = Seeder::start(&data, 2);
    let dl = t.path().join("dl");

    let later = write_file(&t.path().join("later.bin"), 150 << 10, 9);
    let later_id = publish_id(&data, &t.path().join("later.bin"), &[]);
    let out = t.path().join("later.out");
    let got = until_ok(|| get_cmd(&dl, &later_id, &seeder.peer(), &out));
    assert!(got.status.success(), "never served: {}", stderr_of(&got));
    assert_eq!(fs::read(&out).unwrap(), later);

    // Unpublish by path: refused from then on (within the watch interval).
    let gone = run_ok(fm(&data).args(["--json", "unpublish"]).arg(t.path().join("first.bin")));
    assert_eq!(json(&gone)[0], first_id.as_str());
    let out1 = t.path().join("first.out");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let o = get_cmd(&dl, &first_id, &seeder.peer(), &out1).output().unwrap();
        let _ = fs::remove_file(&out1);
        if !o.status.success() || Instant::now() > deadline {
            break o;
        }
    };
    assert!(stderr_of(&refused).contains("does not have file"), "{}", stderr_of(&refused));
    drop(first);
    let ls = json(&run_ok(fm(&data).args(["--json", "ls"])));
    assert_eq!(ls.as_array().unwrap().len(), 1);
    // An unknown target is an error that names it.
    let bad = fm(&data).args(["unpublish", "/no/such/file"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr_of(&bad).contains("/no/such/file"), "{}", stderr_of(&bad));
    let stats = seeder.stop();
    assert_eq!(stats["files_served"], 1, "{stats}");
}

/// `--config` reaches the node: with `peer_timeout_ms = 300` a client that connects and
/// says nothing is dropped after the handshake deadline (the default is 10 s, more than
/// this test's 5 s read deadline). A bad key or value is refused with its name.
#[test]
fn the_config_file_sets_the_node_knobs() {
    use common::{fm, stderr_of, Seeder};
    use std::io::Read;
    let t = tempdir();
    let data = t.path().join("seed");
    let conf = t.path().join("node.toml");
    fs::write(&conf, "peer_timeout_ms = 300\n").unwrap();
    let conf_arg = conf.to_str().unwrap();
    let seeder = Seeder::start_with_args(&data, 1, &["--config", conf_arg]);
    let mut s = std::net::TcpStream::connect(seeder.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("closed by the seeder, not timed out here");
    assert_eq!(n, 0, "the seeder sent something to a silent client");
    let stats = seeder.stop();
    assert_eq!(stats["handshakes_failed_peer"], 1, "{stats}");

    fs::write(&conf, "peer_timeout = 300\n").unwrap();
    let out = fm(&data).args(["--config", conf_arg, "seed"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("peer_timeout"), "{}", stderr_of(&out));
    fs::write(&conf, "catalog_watch_interval_ms = 0\n").unwrap();
    let out = fm(&data).args(["--config", conf_arg, "seed"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("catalog_watch_interval_ms = 0 is outside"),
        "{}",
        stderr_of(&out)
    );
}

/// The DHT through the node: a seeder node publishes through its handle (announced at
/// once), and a client node that joins through it finds the seeder as the provider of the
/// new file through its own handle; `resolve_peers` turns that into a pinned peer. Once
/// unpublished, the file is no longer found.
#[test]
fn a_file_published_through_the_handle_is_found_through_another_nodes_dht() {
    use furymesh::dht::Key;
    use furymesh::node::DhtServerOptions;
    let t = tempdir();
    let (sd, dd) = (t.path().join("seed"), t.path().join("dl"));
    write_file(&t.path().join("f.bin"), 70 << 10, 10);
    let opts = NodeOptions {
        data_dir: Some(sd.clone()),
        dht: Some(DhtServerOptions { read_only: false, ..DhtServerOptions::client(Vec::new()) }),
        ..NodeOptions::new(Some("127.0.0.1:0".parse().unwrap()), 1, node_security(&sd))
    };
    let a = Node::start(Vec::new(), &opts).unwrap();
    let id = publish(&a.handle(), &t.path().join("f.bin"));
    let client = NodeOptions {
        dht: Some(DhtServerOptions::client(vec![addr(&a)])),
        ..NodeOptions::new(None, 1, node_security(&dd))
    };
    let b = Node::start(Vec::new(), &client).unwrap();
    let hb = b.handle();
    let found = hb.find_providers(Key::from_file_id(&id), Duration::from_secs(15)).unwrap();
    assert_eq!(found.contacts.len(), 1, "{found:?}");
    assert_eq!(found.contacts[0].addr, addr(&a));
    let resolved = hb.resolve_peers(id, &[]).unwrap();
    assert_eq!(resolved.peers.len(), 1);
    assert_eq!(resolved.peers[0].node_id, Some(a.handle().security().node_id()));
    let out = t.path().join("out");
    get(&hb, id, resolved.peers[0], out.clone()).expect("download from the provider");
    assert_eq!(fs::read(&out).unwrap(), fs::read(t.path().join("f.bin")).unwrap());

    // Unpublished: withdrawn from the DHT (the seeder no longer answers for it; in this
    // two-node network nobody else holds its record), so nobody finds it any more.
    // The withdrawal reaches the seeder's DHT asynchronously (a message to its shard 0),
    // so a lookup racing it may still see the record: look until it is gone.
    assert!(a.handle().unpublish(&id).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gone = hb.find_providers(Key::from_file_id(&id), Duration::from_secs(2)).unwrap();
        if gone.contacts.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still found after unpublish: {gone:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Forwards connections to `to`, holding each of a connection's first `held` reads from
/// the client for `hold` before passing it on (a client slowed down between its handshake
/// messages); everything else flows at once. Returns the address to connect to.
fn slow_client_proxy(to: SocketAddr, held: usize, hold: Duration) -> SocketAddr {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut seeder) = TcpStream::connect(to) else { return };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), seeder.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut reads = 0;
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if reads < held {
                        std::thread::sleep(hold);
                    }
                    reads += 1;
                    if seeder.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = seeder.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// The seeder's handshake deadline follows the client's messages, not the clock from
/// accept: with `peer_timeout_ms = 2000`, a client whose two handshake messages each reach
/// the seeder 1.4 s late (2.8 s in all, past one timeout) is served, while one that drips
/// its first message a byte at a time (bytes arrive, no message is ever whole) is given up
/// on.
#[test]
fn the_seeders_handshake_deadline_follows_whole_messages() {
    use common::{get_cmd, publish_id, run_ok, Seeder};
    use std::io::{Read, Write};
    let t = tempdir();
    let data = t.path().join("seed");
    let src = t.path().join("f.bin");
    let original = write_file(&src, 100_000, 3);
    let id = publish_id(&data, &src, &[]);
    let conf = t.path().join("node.toml");
    fs::write(&conf, "peer_timeout_ms = 2000\n").unwrap();
    let seeder = Seeder::start_with_args(&data, 1, &["--config", conf.to_str().unwrap()]);
    let slow = slow_client_proxy(seeder.addr, 2, Duration::from_millis(1400));
    let out = t.path().join("out.bin");
    run_ok(&mut get_cmd(&t.path().join("client"), &id, &slow.to_string(), &out));
    assert!(fs::read(&out).unwrap() == original, "the slow client's download differs");

    // A client that announces a 1 KiB hello and drips it a byte every 200 ms.
    let mut drip = std::net::TcpStream::connect(seeder.addr).unwrap();
    drip.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    drip.write_all(&1024u16.to_le_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let closed = loop {
        match drip.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => panic!("the seeder answered half a hello"),
            // Not closed yet: one more byte (a reset ends it too).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if drip.write_all(&[0]).is_err() {
                    break true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if drip.write_all(&[0]).is_err() {
                    break true;
                }
            }
            Err(_) => break true,
        }
    };
    assert!(closed);
    let stats = seeder.stop();
    assert_eq!(stats["handshakes_failed_by_reason"]["timeout"], 1, "{stats}");
}
