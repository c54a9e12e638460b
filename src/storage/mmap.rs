//! The only place that maps files into memory.
//!
//! A file mapping stays valid only as long as nobody shrinks the file under it: a page past
//! the new end of file raises SIGBUS when user space touches it, which kills the whole
//! process. FuryMesh therefore keeps one rule for mapped bytes: **they are read by the
//! kernel, never by user space.** Map slices may be handed to `send(2)`; when a page has
//! vanished there, the kernel returns `EFAULT`, an ordinary error that closes one
//! connection. Every path that needs the bytes in user space (sealing, hashing) reads them
//! with `pread(2)` instead, where a shrunk file is a short read. This is the contract the
//! `unsafe` constructor asks its caller to keep. The seeder no longer maps files (it sends
//! plaintext chunks with `sendfile(2)`, see `node::seed`); `furymesh bench` still does.

use std::fs::File;
use std::io;
use std::ops::Range;

use memmap2::{Advice, Mmap, MmapOptions};

/// A read-only memory map of a whole file. Empty files have no mapping.
pub struct MappedFile {
    map: Option<Mmap>,
    file: File,
}

impl MappedFile {
    /// Maps a published file read-only, for handing slices of it to the kernel.
    ///
    /// # Safety
    ///
    /// Another process may truncate or rewrite the file at any moment (an operator copying
    /// a new release over the old one does exactly that). Reading a mapped page that lies
    /// beyond the file's new end raises **SIGBUS** and kills the process. The caller must
    /// therefore never read [`MappedFile::bytes`] in user space: slices may only be passed
    /// to system calls (`send(2)`, `write(2)`, `madvise(2)`), which report a vanished page as
    /// `EFAULT`. Bytes that must be inspected or transformed in user space are read from
    /// [`MappedFile::file`] with `pread(2)`.
    pub unsafe fn open(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: a read-only private map. The SIGBUS hazard of a file shrinking under it
            // is passed on to the caller by this function's contract: mapped bytes are only
            // ever read by the kernel inside system calls.
            let map = unsafe { MmapOptions::new().len(len as usize).map(&file)? };
            // Sequential access pattern: ask the kernel for aggressive readahead. Advice is a
            // hint; failure changes nothing but speed.
            let _ = map.advise(Advice::Sequential);
            Some(map)
        };
        Ok(Self { map, file })
    }

    /// The mapped bytes, for handing to the kernel only (see [`MappedFile::open`]'s safety
    /// contract: reading them in user space can raise SIGBUS).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Length of the mapping in bytes (the file's size when it was mapped).
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the mapping is empty (an empty file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file behind the map (for `fstat` and `pread`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Asks the kernel to start reading `range` from disk so a later send does not stall the
    /// shard on a page fault. A hint: errors are ignored.
    pub fn prefetch(&self, range: Range<usize>) {
        if let Some(map) = &self.map {
            let end = range.end.min(map.len());
            if range.start < end {
                let _ = map.advise_range(Advice::WillNeed, range.start, end - range.start);
            }
        }
    }
}
