//! Tidy rules (after TigerBeetle's tidy.zig): cheap checks that keep the layout honest.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "generated" {
                out.extend(rust_files(&p));
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn sans_io_modules_touch_no_io() {
    let banned = ["glommio", "std::fs", "TcpStream", "UdpSocket", "TcpListener", "Instant::now"];
    for m in ["dht", "transfer", "wire", "crypto", "throttle", "peer"] {
        let dir = root().join("src").join(m);
        let files = if dir.is_dir() { rust_files(&dir) } else { vec![dir.with_extension("rs")] };
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            // Code only: docs may say what the module does not touch.
            for line in text.lines().map(|l| l.split("//").next().unwrap()) {
                for b in banned {
                    assert!(
                        !line.contains(b),
                        "{} uses `{b}`: sans-IO modules do no I/O",
                        f.display()
                    );
                }
            }
        }
    }
}

/// Edges between core modules that must not exist: identity is below the DHT
/// (`crypto` defines `NodeId`); the DHT and transfer sit side by side and share the token
/// bucket through `throttle`, which sits below both.
const FORBIDDEN_IMPORTS: &[(&str, &str)] =
    &[("crypto", "crate::dht"), ("dht", "crate::transfer"), ("transfer", "crate::dht")];

#[test]
fn core_dependencies_point_down() {
    for (m, banned) in FORBIDDEN_IMPORTS {
        let dir = root().join("src").join(m);
        let files = if dir.is_dir() { rust_files(&dir) } else { vec![dir.with_extension("rs")] };
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for line in text.lines().map(|l| l.split("//").next().unwrap()) {
                assert!(!line.contains(banned), "{} names `{banned}`", f.display());
            }
        }
    }
}

#[test]
fn data_directory_paths_are_named_only_in_the_layout() {
    let names =
        ["\"identity.pk8.der\"", "\"known-peers\"", "\"dht-table.fmt\"", "\"catalog\"", "\"fmm\""];
    for f in rust_files(&root().join("src")) {
        if f.ends_with("storage/layout.rs") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        for line in text.lines().map(|l| l.split("//").next().unwrap()) {
            for n in names {
                assert!(!line.contains(n), "{} spells {n}: use storage::layout", f.display());
            }
        }
    }
}

#[test]
fn only_the_clock_module_may_read_the_clock_or_the_os_rng() {
    let toml = fs::read_to_string(root().join("clippy.toml")).unwrap();
    for banned in ["std::time::Instant::now", "std::time::SystemTime::now", "rand::rng"] {
        assert!(toml.contains(banned), "clippy.toml no longer forbids {banned}");
    }
    for f in rust_files(&root().join("src")) {
        if f.ends_with("node/clock.rs") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("clippy::disallowed_"),
            "{} allows a clippy.toml ban: go through node::clock",
            f.display()
        );
    }
}

#[test]
fn unsafe_lives_only_in_the_allowlist() {
    // mmap.rs maps files; sys.rs makes the system calls glommio lacks (socket set-up,
    // sendfile, gather sends); bench/mod.rs opens one map under `MappedFile::open`'s
    // contract (bytes only reach send(2)). The seeder maps nothing.
    let allowed = ["src/storage/mmap.rs", "src/node/sys.rs", "src/bench/mod.rs"];
    for f in rust_files(&root().join("src")) {
        let rel = f.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&f).unwrap();
        let uses = text.lines().any(|l| {
            let code = l.split("//").next().unwrap();
            code.contains("unsafe {") || code.contains("unsafe fn") || code.contains("unsafe impl")
        });
        assert!(
            !uses || allowed.contains(&rel.as_str()),
            "{rel} uses unsafe outside the allowlist"
        );
    }
}

#[test]
fn every_config_knob_is_documented_in_tuning_md() {
    let config = fs::read_to_string(root().join("src/config.rs")).unwrap();
    let tuning = fs::read_to_string(root().join("tuning.md")).unwrap();
    for line in config.lines() {
        if let Some(rest) = line.strip_prefix("pub const ") {
            let name = rest.split(':').next().unwrap();
            assert!(tuning.contains(name), "config::{name} is not documented in tuning.md");
        }
    }
}

#[test]
fn no_leftover_debugging() {
    for f in rust_files(&root().join("src")) {
        let text = fs::read_to_string(&f).unwrap();
        for bad in ["dbg!(", "FIXME", "todo!("] {
            assert!(!text.contains(bad), "{} contains {bad}", f.display());
        }
    }
}
