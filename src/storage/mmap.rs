//! The only place that maps files into memory.
//!
//! A mapping is only sound while nobody truncates the file under it: touching a page past
//! the new end of file raises SIGBUS. The seeder never touches payload pages itself — it
//! hands slices of the map to `send(2)`, where a vanished page becomes `EFAULT`, an ordinary
//! error — and it checks size and mtime before each chunk, so a file changed after publishing
//! is refused rather than served.

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
    /// Callers keep to this module's rule: payload bytes are read by the kernel (`send(2)`),
    /// and the file's size and mtime are re-checked against the catalog before each use.
    pub fn open(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this process. FuryMesh never writes
            // published files; another process could, which changes bytes (caught by the
            // downloader's hash check) or shrinks the file. Shrinking is detected by the
            // size/mtime check before every chunk, and the remaining window only affects
            // bytes the kernel reads inside send(2), where a missing page is EFAULT.
            let map = unsafe { MmapOptions::new().len(len as usize).map(&file)? };
            // Sequential access pattern: ask the kernel for aggressive readahead. Advice is a
            // hint; failure changes nothing but speed.
            let _ = map.advise(Advice::Sequential);
            Some(map)
        };
        Ok(Self { map, file })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The file behind the map (for `fstat`).
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
