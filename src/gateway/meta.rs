//! Response metadata of the gateway: the media type guessed from a name, the
//! `Content-Disposition` carrying the published name, and `If-None-Match` matching. Pure.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Media type for a file name, by its extension (case-insensitive); unknown extensions
/// are `application/octet-stream`. A short table of what releases hold (archives, images,
/// checksums, signatures, documents) rather than a registry: a wrong guess only changes
/// how a browser shows a file, never the bytes.
pub fn content_type(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "txt" | "sha256" | "sha512" | "sha256sum" | "sha512sum" | "md5" | "log" | "asc" => {
            "text/plain; charset=utf-8"
        }
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "toml" => "application/toml",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "xz" | "txz" => "application/x-xz",
        "bz2" => "application/x-bzip2",
        "zst" => "application/zstd",
        "tar" => "application/x-tar",
        "7z" => "application/x-7z-compressed",
        "deb" => "application/vnd.debian.binary-package",
        "rpm" => "application/x-rpm",
        "iso" => "application/x-iso9660-image",
        "sig" | "gpg" => "application/pgp-signature",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/vnd.microsoft.icon",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// Characters kept as they are in an RFC 8187 `filename*` value (`attr-char`).
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition: inline` with the published `name` (RFC 6266): `filename="…"` with
/// an ASCII fallback (other characters, quotes, backslashes and controls as `_`), plus
/// `filename*=UTF-8''…` (RFC 8187, the successor of RFC 5987) when the name is not plain
/// ASCII, which clients that know it prefer. Only the last path component is used.
/// `inline`, not `attachment`: browsers show text and images, `curl -OJ` and download
/// managers still take the name.
pub fn content_disposition(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let fallback: String =
        base.chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
    if base.is_empty() {
        return "inline".into();
    }
    if fallback == base {
        return format!("inline; filename=\"{base}\"");
    }
    format!(
        "inline; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(base, ATTR_CHAR)
    )
}

/// Whether an `If-None-Match` value matches `etag` (a quoted entity tag): `*`, or a
/// comma-separated list with `etag` in it, weak (`W/`) or not (weak comparison, RFC 9110
/// §13.1.2).
pub fn none_match(header: &[u8], etag: &str) -> bool {
    let Ok(h) = std::str::from_utf8(header) else { return false };
    h.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_extension() {
        assert_eq!(content_type("a.ISO"), "application/x-iso9660-image");
        assert_eq!(content_type("x.tar.gz"), "application/gzip");
        assert_eq!(content_type("SHA256SUMS"), "application/octet-stream");
        assert_eq!(content_type(".bashrc"), "application/octet-stream");
        assert_eq!(content_type("notes.txt"), "text/plain; charset=utf-8");
    }

    #[test]
    fn disposition_encodes_what_is_not_plain_ascii() {
        assert_eq!(content_disposition("dir/a b.iso"), "inline; filename=\"a b.iso\"");
        assert_eq!(
            content_disposition("r\u{e9}sum\u{e9} \"1\".pdf"),
            "inline; filename=\"r_sum_ _1_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
        );
        assert_eq!(
            content_disposition("a\r\nb"),
            "inline; filename=\"a__b\"; filename*=UTF-8''a%0D%0Ab"
        );
        assert_eq!(content_disposition(""), "inline");
    }

    #[test]
    fn if_none_match() {
        let e = "\"ab\"";
        assert!(none_match(b"\"ab\"", e));
        assert!(none_match(b"\"x\", W/\"ab\"", e));
        assert!(none_match(b"*", e));
        assert!(!none_match(b"\"abc\"", e));
        assert!(!none_match(b"ab", e));
    }
}
