//! Advisory locks (`flock(2)`) for state that several `furymesh` processes share: the
//! catalog, `known-peers`, a download's partial file and resume state.
//!
//! A lock belongs to an open file description and ends when the file is closed, also when
//! the process dies (`kill -9` included), so a crash never leaves a stale lock behind. The
//! locks are advisory: they order FuryMesh's own commands, not other programs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// Waits until this process holds the exclusive lock on `file`.
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    Ok(flock(file, FlockOperation::LockExclusive)?)
}

/// Waits until this process holds a shared lock on `file` (readers that must not see a
/// writer's half-done update).
pub fn lock_shared(file: &File) -> io::Result<()> {
    Ok(flock(file, FlockOperation::LockShared)?)
}

/// Takes the exclusive lock on `file` if nobody holds it: `Ok(false)` when another open
/// file (another command) holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An exclusive lock held on a lock file (created if missing, mode 0600, never removed:
/// removing a lock file races with a process about to lock it). Released on drop.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
    path: PathBuf,
}

impl LockFile {
    fn open(path: &Path) -> io::Result<File> {
        // Never truncated: the file's content is not the point, its lock is.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
    }

    /// Waits for the exclusive lock on `path`.
    pub fn acquire(path: &Path) -> io::Result<Self> {
        let file = Self::open(path)?;
        lock_exclusive(&file)?;
        Ok(Self { _file: file, path: path.into() })
    }

    /// The exclusive lock on `path` if nobody holds it, else `None` at once.
    pub fn try_acquire(path: &Path) -> io::Result<Option<Self>> {
        let file = Self::open(path)?;
        Ok(try_lock_exclusive(&file)?.then(|| Self { _file: file, path: path.into() }))
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A download's claim on its output: the exclusive lock on `OUTPUT.furymesh-partial`,
/// held while one `get` writes the partial file and its resume state. The lock is on the
/// partial file's inode, which the download keeps (it is truncated and filled in place,
/// then linked or renamed to the output), so a second `get` to the same output, from this
/// data directory or any other, is refused instead of mixing two files into one.
///
/// Dropped: the lock ends; a partial file this claim created and nobody filled (the
/// download failed before it had a manifest) is removed, so a failed start leaves nothing.
#[derive(Debug)]
pub struct DownloadClaim {
    file: File,
    partial: PathBuf,
    resume: PathBuf,
}

impl DownloadClaim {
    /// Claims `partial` (created empty if missing, never truncated here). `Ok(None)` when
    /// another process holds it: another `get` is writing the same output. `resume` is the
    /// download's resume state, whose presence marks the partial file as worth keeping.
    pub fn try_new(partial: &Path, resume: &Path) -> io::Result<Option<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(partial)?;
        if !try_lock_exclusive(&file)? {
            return Ok(None);
        }
        Ok(Some(Self { file, partial: partial.into(), resume: resume.into() }))
    }
}

impl Drop for DownloadClaim {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let (Ok(ours), Ok(named)) = (self.file.metadata(), std::fs::metadata(&self.partial)) else {
            return;
        };
        let same = ours.dev() == named.dev() && ours.ino() == named.ino();
        if same && ours.len() == 0 && !self.resume.exists() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let held = LockFile::acquire(&p).unwrap();
        // A second open file description, as another process would have.
        assert!(LockFile::try_acquire(&p).unwrap().is_none());
        drop(held);
        assert!(LockFile::try_acquire(&p).unwrap().is_some());
    }

    #[test]
    fn a_download_claim_excludes_a_second_and_cleans_up_an_unused_partial() {
        let dir = tempfile::tempdir().unwrap();
        let (partial, resume) = (dir.path().join("o.partial"), dir.path().join("o.resume"));
        let claim = DownloadClaim::try_new(&partial, &resume).unwrap().unwrap();
        assert!(DownloadClaim::try_new(&partial, &resume).unwrap().is_none());
        drop(claim);
        assert!(!partial.exists(), "an empty partial nobody used is removed");
        let claim = DownloadClaim::try_new(&partial, &resume).unwrap().unwrap();
        std::fs::write(&resume, b"state").unwrap();
        drop(claim);
        assert!(partial.exists(), "a partial with resume state is kept");
    }
}
