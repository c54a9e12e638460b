//! `get c-… -o DIR`: a whole release over one node.
//!
//! 1. The collection's encoding is fetched like any file (`GetOptions::kind` =
//!    collection, so its manifest must hash to the ID in the collection domain) into
//!    `DIR/.furymesh-c-<hex>/` (removed afterwards), then decoded and checked
//!    (`wire::decode_collection`: bounded, verified, every entry path refused unless safe).
//! 2. Before anything else is written, every directory and file the collection names is
//!    looked at with `lstat`: a symlink, or a file where a directory is needed, already
//!    inside DIR refuses the whole collection (nothing is ever written through a link).
//! 3. The files download `COLLECTION_FILES_PARALLEL` at a time, each with the single-file
//!    machinery: verified chunk by chunk, its own partial file and resume state beside its
//!    final name, which appears only once the whole file verified. Executable bits are set
//!    on the verified file.
//!
//! Resume is per file (decision in ARCHITECTURE.md, "Collections"): a file already at its
//! final name is hashed against its entry (size, chunk size, file ID) and kept if it
//! matches; a file in progress resumes from its own resume state.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::fetch::side_paths;
use super::handle::Handle;
use super::{clock, GetError, GetOptions, GetReport};
use crate::collection::{Collection, CollectionEntry};
use crate::config::COLLECTION_FILES_PARALLEL;
use crate::crypto::{chunk_hash, FileId, IdKind};

/// The outcome of `get c-… -o DIR` (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct CollectionReport {
    /// `c-` and 64 hex characters.
    pub collection_id: String,
    /// The collection's display name (the published directory's name).
    pub name: String,
    /// Files in the collection.
    pub files: usize,
    /// Their total size, in bytes.
    pub total_bytes: u64,
    /// Files downloaded by this run.
    pub files_fetched: usize,
    /// Files found complete at their final names (an earlier run's), checked by hash.
    pub files_kept: usize,
    /// Payload bytes fetched over the network by this run.
    pub bytes: u64,
    pub seconds: f64,
    /// The collection itself, for recording it in the catalog.
    #[serde(skip)]
    pub collection: Option<Collection>,
    /// Each fetched file's report, for recording it in the catalog.
    #[serde(skip)]
    pub reports: Vec<GetReport>,
}

/// Downloads collection `template.file_id` into the directory `template.output`, with the
/// peers, security and knobs of `template` for every file. `interrupt` stops it cleanly
/// (every file's state saved); `progress` receives (files done, files total).
pub fn get_collection(
    node: &Handle,
    template: &GetOptions,
    interrupt: &Arc<AtomicBool>,
    progress: &dyn Fn(usize, usize),
) -> Result<CollectionReport, GetError> {
    let started = clock::now();
    let dir = template.output.clone();
    let cid = format!("c-{}", template.file_id);
    fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let (collection, name) = fetch_collection(node, template, interrupt)?;
    let plan = preflight(&dir, &collection, template.force)?;
    for d in collection.directories() {
        let p = dir.join(&d);
        match fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&p, e)),
        }
    }
    remove_stale_temporaries(&dir, &collection);
    let total = collection.entries.len();
    let kept = total - plan.len();
    progress(kept, total);
    let mut queue: VecDeque<&CollectionEntry> = plan.into_iter().collect();
    let mut running = VecDeque::new();
    let mut reports = Vec::new();
    let mut failure = None;
    let stop = Arc::new(AtomicBool::new(false));
    // Mirrors the caller's interrupt into `stop`, which also ends the others on a failure.
    let watch = {
        let (stop, interrupt) = (stop.clone(), interrupt.clone());
        std::thread::Builder::new().name("furymesh-collection".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if interrupt.load(Ordering::Relaxed) {
                    stop.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }
    .map_err(|e| io_err(&dir, e))?;
    loop {
        while failure.is_none() && running.len() < COLLECTION_FILES_PARALLEL {
            let Some(e) = queue.pop_front() else { break };
            let opts = GetOptions {
                file_id: e.file_id,
                kind: IdKind::File,
                output: dir.join(&e.path),
                serve_partial: false,
                web_seeds: Vec::new(),
                ..template.clone()
            };
            match node.download(opts, stop.clone(), Box::new(|_| {})) {
                Ok(id) => running.push_back((id, e)),
                Err(err) => failure = Some(GetError::from(err)),
            }
        }
        if running.is_empty() {
            break;
        }
        // Whichever download ended first (a small file behind a big one must not hold
        // its slot): look every few milliseconds.
        let ended = running
            .iter()
            .position(|(id, _)| node.status(*id).map_or(true, |s| s.state != "running"));
        let Some(i) = ended else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let Some((id, e)) = running.remove(i) else { break };
        let result = node.wait(id).map_err(GetError::from).and_then(|r| r);
        match result.and_then(|r| finish_file(&dir, e, r)) {
            Ok(r) => {
                reports.push(r);
                progress(kept + reports.len(), total);
            }
            Err(err) => {
                stop.store(true, Ordering::SeqCst);
                // The first real failure explains best; the others were stopped by it.
                if failure.is_none() || matches!(failure, Some(GetError::Interrupted)) {
                    failure = Some(err);
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = watch.join();
    if let Some(e) = failure {
        return Err(e);
    }
    if interrupt.load(Ordering::Relaxed) {
        return Err(GetError::Interrupted);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(CollectionReport {
        collection_id: cid,
        name,
        files: total,
        total_bytes: collection.total_size(),
        files_fetched: reports.len(),
        files_kept: kept,
        bytes: reports.iter().map(|r| r.bytes).sum(),
        seconds,
        collection: Some(collection),
        reports,
    })
}

fn io_err(path: &Path, source: io::Error) -> GetError {
    GetError::Io { path: path.into(), source }
}

/// Fetches the collection's encoding into `DIR/.furymesh-c-<hex>/` (a fixed name, so a
/// run killed half-way leaves nothing another run does not clean up; removed on return),
/// and decodes and checks it. Returns it with its display name.
fn fetch_collection(
    node: &Handle,
    template: &GetOptions,
    interrupt: &Arc<AtomicBool>,
) -> Result<(Collection, String), GetError> {
    let tmp = template.output.join(format!(".furymesh-c-{}", template.file_id));
    fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    let result = fetch_collection_into(node, template, interrupt, &tmp);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn fetch_collection_into(
    node: &Handle,
    template: &GetOptions,
    interrupt: &Arc<AtomicBool>,
    tmp: &Path,
) -> Result<(Collection, String), GetError> {
    let blob = tmp.join("collection");
    // A complete blob left by a killed run: its manifest is gone with it, fetch it again.
    match fs::remove_file(&blob) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&blob, e)),
        _ => {}
    }
    let opts = GetOptions {
        kind: IdKind::Collection,
        output: blob.clone(),
        force: false,
        serve_partial: false,
        web_seeds: Vec::new(),
        ..template.clone()
    };
    let report = node.get(opts, interrupt.clone(), Box::new(|_| {}))?;
    let bytes = fs::read(&blob).map_err(|e| io_err(&blob, e))?;
    let collection = crate::wire::decode_collection(&bytes).map_err(|e| {
        GetError::BadCollection { id: format!("c-{}", template.file_id), what: e.to_string() }
    })?;
    let name = report.info.map(|i| i.name).unwrap_or_default();
    Ok((collection, name))
}

/// Looks at every path the collection will write, without following links, before
/// anything is written: returns the entries still to fetch. Refuses a symlink anywhere on
/// an entry's way, a file or special file where a directory is needed, and a directory or
/// special file where a file goes. A regular file at an entry's final name is kept if it
/// hashes to the entry's file ID; otherwise it is an error without `force`.
fn preflight<'c>(
    dir: &Path,
    c: &'c Collection,
    force: bool,
) -> Result<Vec<&'c CollectionEntry>, GetError> {
    let unsafe_at = |p: PathBuf, why: &str| GetError::UnsafeOutput { path: p, why: why.into() };
    for d in c.directories() {
        let p = dir.join(&d);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_at(p, "a symlink already inside the output directory"))
            }
            Ok(m) if !m.is_dir() => {
                return Err(unsafe_at(
                    p,
                    "the collection needs a directory here; a file is in the way",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p, e)),
        }
    }
    let mut todo = Vec::new();
    for e in &c.entries {
        let p = dir.join(&e.path);
        let (partial, resume) = side_paths(&p);
        for side in [&partial, &resume] {
            if fs::symlink_metadata(side).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(unsafe_at(
                    side.clone(),
                    "a symlink already inside the output directory",
                ));
            }
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_at(p, "a symlink already inside the output directory"))
            }
            Ok(m) if !m.is_file() => {
                return Err(unsafe_at(p, "not a regular file; the collection has a file here"))
            }
            Ok(_) if matches_entry(&p, e) => {
                // Verified by an earlier run, which may have been killed between giving it
                // its final name and tidying up (side files, execute bits).
                for side in [&partial, &resume] {
                    match fs::remove_file(side) {
                        Err(err) if err.kind() != io::ErrorKind::NotFound => {
                            return Err(io_err(side, err))
                        }
                        _ => {}
                    }
                }
                set_executable(&p, e)?;
            }
            Ok(_) if force => todo.push(e),
            Ok(_) => return Err(GetError::OutputExists { path: p }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => todo.push(e),
            Err(err) => return Err(io_err(&p, err)),
        }
    }
    Ok(todo)
}

/// Removes the temporary files a run killed mid-way through an atomic write (a resume
/// state's `.furymesh-tmp*`, `storage::write_atomic`) left in the collection's
/// directories, unless an entry has that name. Best effort.
fn remove_stale_temporaries(dir: &Path, c: &Collection) {
    let entries: std::collections::HashSet<&str> =
        c.entries.iter().map(|e| e.path.as_str()).collect();
    let mut dirs = c.directories();
    dirs.push(String::new());
    for d in dirs {
        let Ok(list) = fs::read_dir(dir.join(&d)) else { continue };
        for f in list.flatten() {
            let name = f.file_name();
            let Some(name) = name.to_str().filter(|n| n.starts_with(".furymesh-tmp")) else {
                continue;
            };
            let rel = if d.is_empty() { name.to_owned() } else { format!("{d}/{name}") };
            if !entries.contains(rel.as_str()) && f.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(f.path());
            }
        }
    }
}

/// Whether the file at `path` is the entry's content: its size, then its file ID computed
/// from its chunks at the entry's chunk size.
fn matches_entry(path: &Path, e: &CollectionEntry) -> bool {
    use std::io::Read;
    if fs::metadata(path).map(|m| m.len()).ok() != Some(e.size) || e.chunk_size == 0 {
        return false;
    }
    let Ok(mut f) = fs::File::open(path) else { return false };
    let mut buf = vec![0u8; e.chunk_size as usize];
    let mut hashes = Vec::new();
    let mut left = e.size;
    while left > 0 {
        let n = left.min(e.chunk_size as u64) as usize;
        if f.read_exact(&mut buf[..n]).is_err() {
            return false;
        }
        hashes.push(chunk_hash(&buf[..n]));
        left -= n as u64;
    }
    FileId::from_manifest(e.size, e.chunk_size, &hashes) == e.file_id
}

/// After a file verified: its manifest must agree with its entry (size), and its
/// executable bits are set where read bits are.
fn finish_file(dir: &Path, e: &CollectionEntry, r: GetReport) -> Result<GetReport, GetError> {
    let path = dir.join(&e.path);
    if r.file_size != e.size {
        let _ = fs::remove_file(&path);
        return Err(GetError::BadCollection {
            id: e.file_id.to_hex(),
            what: format!(
                "{:?}: the entry says {} bytes, its file has {}",
                e.path, e.size, r.file_size
            ),
        });
    }
    set_executable(&path, e)?;
    Ok(r)
}

/// Sets the execute bits where read bits are set, if the entry is executable.
fn set_executable(path: &Path, e: &CollectionEntry) -> Result<(), GetError> {
    if e.executable {
        let mut perm = fs::metadata(path).map_err(|err| io_err(path, err))?.permissions();
        let mode = perm.mode();
        perm.set_mode(mode | ((mode & 0o444) >> 2));
        fs::set_permissions(path, perm).map_err(|err| io_err(path, err))?;
    }
    Ok(())
}

/// Records a downloaded collection in the catalog of `data_dir` in one read-modify-write
/// (one lock and one load however many files): every fetched file, from its final path,
/// and the collection itself, so a `seed` on this data directory serves the whole
/// release. Best effort: the download succeeded; the error is for a warning.
pub fn record_collection(data_dir: &Path, report: &CollectionReport) -> Result<(), String> {
    use crate::storage::{Catalog, CatalogEntry, FileStamp};
    let Some(c) = &report.collection else { return Ok(()) };
    let (mut catalog, _lock) = Catalog::load_for_update(data_dir).map_err(|e| e.to_string())?;
    for r in &report.reports {
        let (Some(info), Some(out)) = (&r.info, &r.output) else { continue };
        let path = fs::canonicalize(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let meta = fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let entry = CatalogEntry { info: info.clone(), path, stamp: FileStamp::of(&meta) };
        catalog.insert(entry).map_err(|e| e.to_string())?;
    }
    let entry =
        crate::storage::store_collection(data_dir, c, &report.name).map_err(|e| e.to_string())?;
    catalog.insert(entry).map_err(|e| e.to_string())
}
