//! Helpers shared by the fuzz targets in `fuzz_targets/`: the deterministic fixtures, input
//! layouts and the DHT operation interpreter (also used by the seed generator,
//! `tests/fuzz_seeds.rs`), and a cursor over the fuzzer's bytes.

pub mod fixtures;

pub use fixtures::Cursor;
