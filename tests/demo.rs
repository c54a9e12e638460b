//! `furymesh demo` end to end: several seeders, discovery through the DHT, a verified
//! download. (The default 256 MiB run is the README's first command; this uses a small file.)

mod common;

use std::fs;

use common::*;

#[test]
fn demo_discovers_providers_and_downloads_an_identical_file() {
    let t = tempdir();
    let data = t.path().join("data");
    // The demo's four nodes get fixture identities instead of generating RSA-4096 keys.
    for i in 0..4 {
        ensure_identity(&data.join("demo").join(format!("node-{i}")));
    }
    let out = run_ok(fm(&data).args(["demo", "--size", "16MiB", "--json"]));
    let v = json(&out);
    assert_eq!(v["identical"], true);
    // Checked here, not only by the demo: rebuild the demo's file from its seed and compare
    // digests with what the downloader wrote.
    let want = tempdir();
    let path = want.path().join("release.img");
    furymesh::bench::generate_file(&path, 16 << 20, furymesh::demo::DEMO_FILE_SEED).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(fs::read(&path).unwrap()));
    assert_eq!(v["downloaded_sha256"], digest.as_str(), "{v}");
    assert_eq!(v["providers"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["get"]["bytes"], 16u64 << 20);
    // From all three at once (endgame duplicates may add a little).
    let peers = v["get"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3, "{v}");
    let total: u64 = peers.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    assert!(total >= 16 << 20);
    // Encrypted (the default): every payload byte sealed by the seeders.
    assert!(v["seeders"]["payload_bytes_sealed"].as_u64().unwrap() >= 16 << 20);
    // Each provider proved the node ID the DHT named for it.
    for p in peers {
        let id = p["node_id"].as_str().unwrap();
        assert!(v["providers"].as_array().unwrap().iter().any(|c| c["node_id"] == id), "{v}");
    }
    // The ratio is taken against the best of the raw copies around the download.
    let runs = v["raw_tcp_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{v}");
    let best = runs.iter().map(|r| r["bytes_per_sec"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(v["raw_tcp"]["bytes_per_sec"].as_f64().unwrap(), best, "{v}");
    assert!(runs.iter().all(|r| r["bytes"] == 16u64 << 20), "{v}");
    let ratio = v["get"]["bytes_per_sec"].as_f64().unwrap() / best;
    assert!((v["ratio_to_raw_tcp"].as_f64().unwrap() - ratio).abs() < 1e-9, "{v}");
}
