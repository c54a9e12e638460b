//! `furymesh bench --json`: the documented fields are all there and consistent.

mod common;

use common::*;

#[test]
fn bench_json_has_every_documented_field() {
    let out_dir = tempdir();
    let out = run_ok(
        fm(&out_dir.path().join("data"))
            .args(["bench", "--size", "8MiB", "--json", "--out"])
            .arg(out_dir.path()),
    );
    let v = json(&out);
    let tp = v["throughput_bytes_per_sec"].as_f64().unwrap();
    assert!(tp > 0.0, "{v}");
    for limit in [
        "raw_loopback_tcp",
        "memcpy_per_core",
        "sha256_per_core",
        "aes256gcm_seal_per_core",
        "aes256gcm_open_per_core",
    ] {
        assert!(v["limits"][limit].as_f64().unwrap() > 0.0, "limit {limit}: {v}");
    }
    let ratio = v["ratios"]["raw_loopback_tcp"].as_f64().unwrap();
    assert!((ratio - tp / v["limits"]["raw_loopback_tcp"].as_f64().unwrap()).abs() < 1e-9);
    let l = &v["latency_us"];
    let (p50, p90, p99, p999, max) = (
        l["p50"].as_u64().unwrap(),
        l["p90"].as_u64().unwrap(),
        l["p99"].as_u64().unwrap(),
        l["p999"].as_u64().unwrap(),
        l["max"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max, "{l}");
    // 8 MiB at the automatic 256 KiB chunk size: 32 chunks measured (a chunk asked again
    // after a stall on a loaded machine is measured again when both copies verify).
    let count = l["count"].as_u64().unwrap();
    assert!((32..=64).contains(&count), "{l}");
    assert!(v["cpu_seconds_per_gib"].as_f64().unwrap() > 0.0);
    // Both ends are accounted separately (threads of the seeders' and the downloader's
    // nodes, in 10 ms ticks: either may read 0 in this short run), within the whole process.
    let whole = v["cpu_seconds_per_gib"].as_f64().unwrap();
    let seeder = v["seeder_cpu_seconds_per_gib"].as_f64().unwrap();
    let downloader = v["downloader_cpu_seconds_per_gib"].as_f64().unwrap();
    assert!(seeder >= 0.0 && downloader >= 0.0, "{v}");
    assert!(seeder + downloader <= whole + 1e-9, "{v}");
    let sha = v["ratios"]["sha256_all_cores"].as_f64().unwrap();
    assert!(sha > 0.0 && sha < 10.0, "{v}");
    let seconds = v["seconds"].as_f64().unwrap();
    assert!(seconds > 0.0);
    let d = &v["downloaders"][0];
    assert_eq!(d["bytes"], 8u64 << 20);
    assert!(
        d["seconds"].as_f64().unwrap() > 0.0
            && d["throughput_bytes_per_sec"].as_f64().unwrap() > 0.0
    );
    // The timeline is [seconds, bytes] samples every 100 ms, bytes never going down.
    let tl = v["timeline"].as_array().unwrap();
    let bytes: Vec<u64> = tl.iter().map(|p| p[1].as_u64().unwrap()).collect();
    assert!(bytes.windows(2).all(|w| w[0] <= w[1]), "{tl:?}");
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
    let s = &v["scenario"];
    assert_eq!(s["seeders"], 1);
    assert_eq!(s["downloaders"], 1);
    assert_eq!(s["file_bytes"], 8u64 << 20);
    assert_eq!(s["transport"], "tcp");
    assert_eq!(s["encryption"], true);
    // Encrypted by default: every payload byte went through the one-pass seal, and the
    // ratio against the slower of network and cipher is there.
    assert!(v["seeder_payload_bytes_sealed"].as_u64().unwrap() >= 8 << 20, "{v}");
    assert_eq!(v["seeder_payload_bytes_from_map"], 0);
    assert!(v["ratios"]["min_raw_tcp_cipher"].as_f64().unwrap() > 0.0, "{v}");
    for k in [
        "seeder_shards",
        "connections_per_downloader",
        "window",
        "strategy",
        "chunk_size_bytes",
        "max_upload_rate_bytes",
    ] {
        assert!(s.get(k).is_some(), "scenario.{k} missing: {s}");
    }
    let m = &v["machine"];
    assert!(m["cores"].as_u64().unwrap() >= 1);
    assert!(m["cpu_flags"].is_array() && m["kernel"].is_string() && m["cpu_model"].is_string());
    assert_eq!(v["downloaders"].as_array().unwrap().len(), 1);
    for f in ["result.json", "throughput.svg", "latency.svg"] {
        let p = out_dir.path().join(f);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.is_empty(), "{f}");
    }
    assert!(std::fs::read_to_string(out_dir.path().join("latency.svg"))
        .unwrap()
        .contains("<polyline"));
}

#[test]
fn bench_refuses_scenarios_it_cannot_run() {
    let t = tempdir();
    let data = t.path().join("data");
    let r = fm(&data).args(["bench", "--seeders", "0"]).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("at least one seeder"), "{}", stderr_of(&r));
    let r = fm(&data).args(["bench", "--encryption", "maybe"]).output().unwrap();
    assert!(!r.status.success());
    assert!(stderr_of(&r).contains("expected `on` or `off`"), "{}", stderr_of(&r));
}
