//! The layout of a data directory: every path FuryMesh reads or writes under `DATA_DIR` is
//! named here and nowhere else, so a new front end (a daemon, an API) finds the same files.
//!
//! ```text
//! DATA_DIR/                 --data-dir, else $FURYMESH_HOME, else default_data_dir()
//!   identity.pk8.der        the node's RSA key, PKCS#8 DER, mode 600 (node::secure)
//!   session.key             the current session key and its certificate, mode 600,
//!                           reused by later commands while fresh (node::secure)
//!   known-peers             trust on first use: `HOST:PORT NODE_ID` per line (node::secure)
//!   dht-table.fmt           routing-table snapshot, a FlatBuffers `DhtTable` (node::dht)
//!   catalog/<file_id>.fmm   one FlatBuffers `Manifest` per published file (storage::Catalog)
//!   catalog/.lock           the catalog's write lock (flock; storage::Catalog::relock)
//!   collections/<id>.fmc    a published collection's canonical encoding, served in place
//!                           under its collection ID (storage::store_collection)
//!   seed.lock               held (flock) by the one `seed` running on this directory (cli)
//!   api.token               the control API's bearer token, mode 600 (api)
//!   api.addr                the running seed's API address, `HOST:PORT` (api)
//!   api-downloads.json      downloads started through the API, resumed at the next start (api)
//!   http.addr               the running seed's HTTP gateway address, `HOST:PORT` (gateway)
//!   demo/node-<n>/          the demo's node data directories, same layout (demo)
//! ```
//!
//! A download's partial file and resume state live beside its output file, not here
//! (`node/fetch.rs`). A network secret has no default path: `--network-secret FILE` names
//! it. Paths only: the modules named above read and write the files.

use std::path::{Path, PathBuf};

use crate::crypto::FileId;

/// Name of the directory under the platform's data directory (`~/.local/share` on Linux).
const APP_DIR: &str = "furymesh";
const IDENTITY_FILE: &str = "identity.pk8.der";
const SESSION_FILE: &str = "session.key";
const KNOWN_PEERS_FILE: &str = "known-peers";
const DHT_TABLE_FILE: &str = "dht-table.fmt";
const CATALOG_DIR: &str = "catalog";
const CATALOG_LOCK_FILE: &str = ".lock";
/// Extension of a manifest file in the catalog.
const MANIFEST_EXTENSION: &str = "fmm";
const DEMO_DIR: &str = "demo";
const COLLECTIONS_DIR: &str = "collections";
/// Extension of an encoded collection.
const COLLECTION_EXTENSION: &str = "fmc";
const API_TOKEN_FILE: &str = "api.token";
const API_ADDR_FILE: &str = "api.addr";
const API_DOWNLOADS_FILE: &str = "api-downloads.json";
const HTTP_ADDR_FILE: &str = "http.addr";

/// The data directory when neither `--data-dir` nor `FURYMESH_HOME` names one:
/// `furymesh` under the platform's data directory. `None` if the platform has none.
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join(APP_DIR))
}

/// The node identity key.
/// Whether `dir` is a FuryMesh data directory (it holds a node identity, an API token or a
/// catalog). Publishing never reads into one: it holds the node's private key.
pub fn is_data_dir(dir: &Path) -> bool {
    identity_path(dir).exists() || api_token_path(dir).exists() || catalog_dir(dir).is_dir()
}

/// The data directory `path` lies in (itself or its nearest such ancestor), if any.
pub fn data_dir_around(path: &Path) -> Option<&Path> {
    path.ancestors().find(|a| is_data_dir(a))
}

/// Whether `path` is a download's side file (`OUTPUT.furymesh-partial` or
/// `OUTPUT.furymesh-resume`): unverified data or resume state, never content to publish.
pub fn is_download_side_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".furymesh-partial") || n.ends_with(".furymesh-resume"))
}

/// The lock the one `seed` running on a data directory holds for its whole life: a second
/// `seed` on the same directory would share its identity, DHT table, API files and
/// download list, and remove the first one's `api.addr` when it stops.
pub fn seed_lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("seed.lock")
}

pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

/// The kept session key (`node::secure`).
pub fn session_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SESSION_FILE)
}

/// The known-peers file (node IDs pinned on first use).
pub fn known_peers_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KNOWN_PEERS_FILE)
}

/// The DHT routing-table snapshot a seeder loads at start and saves at stop.
pub fn dht_table_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DHT_TABLE_FILE)
}

/// The configuration file `seed` reads when no `--config` is given (`service::ConfigFile`).
pub fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("config.toml")
}

/// The control API's bearer token (created by the first `seed` with the API on).
pub fn api_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(API_TOKEN_FILE)
}

/// The address a running `seed`'s control API listens on (removed when it stops).
pub fn api_addr_path(data_dir: &Path) -> PathBuf {
    data_dir.join(API_ADDR_FILE)
}

/// The downloads started through the API that have not ended (running or paused): a
/// restarted `seed` resumes them. Replaced atomically (written aside, then renamed).
pub fn api_downloads_path(data_dir: &Path) -> PathBuf {
    data_dir.join(API_DOWNLOADS_FILE)
}

/// The catalog directory: one manifest file per published file.
pub fn catalog_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(CATALOG_DIR)
}

/// The catalog's write lock: commands that change the catalog hold an exclusive `flock`
/// on it while they reload and write (never removed; not a manifest).
pub fn catalog_lock_path(data_dir: &Path) -> PathBuf {
    catalog_dir(data_dir).join(CATALOG_LOCK_FILE)
}

/// The manifest file of `file_id` in the catalog.
pub fn manifest_path(data_dir: &Path, file_id: &FileId) -> PathBuf {
    catalog_dir(data_dir).join(format!("{file_id}.{MANIFEST_EXTENSION}"))
}

/// Whether `path` (an entry of [`catalog_dir`]) is named like a manifest; other files there
/// (temporary files of an interrupted write) are ignored.
pub fn is_manifest(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(MANIFEST_EXTENSION)
}

/// Where a running `seed --http` writes its gateway's address (removed when it stops).
pub fn http_addr_path(data_dir: &Path) -> PathBuf {
    data_dir.join(HTTP_ADDR_FILE)
}

/// Where published collections' encodings live (served in place like files).
pub fn collections_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(COLLECTIONS_DIR)
}

/// Whether `path` looks like an encoded collection: `collections/<64 hex>.fmc` (see
/// [`collection_path`]; the manifest decides, this only spares other files the check).
pub fn is_collection_blob(path: &Path) -> bool {
    let in_dir = path
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == std::ffi::OsStr::new(COLLECTIONS_DIR));
    let named = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.strip_suffix(COLLECTION_EXTENSION)
            .and_then(|stem| stem.strip_suffix('.'))
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    in_dir && named
}

/// The encoded collection `id` (its 64 hex characters, without the `c-` prefix).
pub fn collection_path(data_dir: &Path, id: &FileId) -> PathBuf {
    collections_dir(data_dir).join(format!("{id}.{COLLECTION_EXTENSION}"))
}

/// The data directory of demo node `index` (a data directory of its own).
pub fn demo_node_dir(data_dir: &Path, index: usize) -> PathBuf {
    data_dir.join(DEMO_DIR).join(format!("node-{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_documented_ones() {
        // These names are on users' disks: changing one orphans existing files.
        let d = Path::new("/d");
        let id = FileId([0xab; 32]);
        assert_eq!(identity_path(d), Path::new("/d/identity.pk8.der"));
        assert_eq!(known_peers_path(d), Path::new("/d/known-peers"));
        assert_eq!(dht_table_path(d), Path::new("/d/dht-table.fmt"));
        assert_eq!(catalog_dir(d), Path::new("/d/catalog"));
        let m = manifest_path(d, &id);
        assert_eq!(m, Path::new(&format!("/d/catalog/{}.fmm", "ab".repeat(32))));
        assert!(is_manifest(&m));
        assert!(!is_manifest(Path::new("/d/catalog/.furymesh-tmpXYZ")));
        assert_eq!(demo_node_dir(d, 3), Path::new("/d/demo/node-3"));
        let c = collection_path(d, &id);
        assert_eq!(c, Path::new(&format!("/d/collections/{}.fmc", "ab".repeat(32))));
    }
}
