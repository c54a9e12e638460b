//! Reading and writing length-prefixed frames on an async byte stream.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

use crate::wire::FRAME_PREFIX_BYTES;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum FrameError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// A sealed record did not open: tampered with, replayed, reordered or cut short on
    /// the way. The connection closes; nothing of the record is used.
    #[error("{0}")]
    Record(#[from] crate::crypto::RecordError),
}

fn eof_is_truncation(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

/// Reads one frame body into `body` (resized to fit). Returns `Ok(false)` on a clean end of
/// stream before the first byte of a frame. The length is checked against `max_bytes`
/// before anything is allocated.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
    max_bytes: u32,
) -> Result<bool, FrameError> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    let first = r.read(&mut prefix).await?;
    if first == 0 {
        return Ok(false);
    }
    r.read_exact(&mut prefix[first..]).await.map_err(eof_is_truncation)?;
    let len = u32::from_le_bytes(prefix);
    if len > max_bytes {
        return Err(FrameError::TooLarge { len, max: max_bytes });
    }
    body.resize(len as usize, 0);
    r.read_exact(body).await.map_err(eof_is_truncation)?;
    Ok(true)
}

/// Reads exactly `buf.len()` payload bytes.
pub(super) async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<(), FrameError> {
    r.read_exact(buf).await.map_err(eof_is_truncation)
}
