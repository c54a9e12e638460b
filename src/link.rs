//! Share links: `furymesh:` URIs that carry everything `get` needs.
//!
//! ```text
//! furymesh:<ID>?name=<NAME>&peer=<NODE_ID@HOST:PORT>&bootstrap=<HOST:PORT>&web-seed=<URL>
//! ```
//!
//! `ID` is a file ID (64 hex) or a collection ID (`c-` + 64 hex); every field after it is
//! optional, `peer`, `bootstrap` and `web-seed` repeatable, values percent-encoded
//! (RFC 3986). Peers are pinned: the link names the node each must prove to be. Web seeds
//! name HTTP mirrors that `get` fetches chunks from (`node::webseed`). Pure: hosts are not
//! resolved here. A malformed link is refused with an error naming the part that is wrong.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::crypto::{ContentId, NodeId};

/// The scheme, with its colon.
pub const LINK_SCHEME: &str = "furymesh:";
/// Longest link accepted, in bytes (a link is pasted by people: bounded like any input).
pub const LINK_MAX_BYTES: usize = 16 * 1024;

/// Characters percent-encoded in a value: controls, space, non-ASCII (always) and every
/// character with a meaning in a URI query.
const VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `HOST:PORT`, unresolved (HOST: a name, an IPv4 address or a bracketed IPv6 address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Without brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s.rsplit_once(':').ok_or("no :PORT")?;
        let host = match host.strip_prefix('[') {
            Some(h) => h.strip_suffix(']').ok_or("unclosed [")?,
            None if host.contains(':') => return Err("an IPv6 address needs brackets".into()),
            None => host,
        };
        if host.is_empty() || host.len() > 253 {
            return Err("empty or over-long host".into());
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')) {
            return Err(format!("host {host:?} has characters no host name or address has"));
        }
        let port: u16 = port.parse().map_err(|_| format!("port {port:?} is not a number"))?;
        if port == 0 {
            return Err("port 0".into());
        }
        Ok(Self { host: host.to_owned(), port })
    }
}

/// A pinned peer: `NODE_ID@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPeer {
    pub node_id: NodeId,
    pub addr: HostPort,
}

impl fmt::Display for LinkPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

impl FromStr for LinkPeer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, addr) = s.split_once('@').ok_or("not NODE_ID@HOST:PORT")?;
        let node_id = id.parse().map_err(|e| format!("node ID {id:?}: {e}"))?;
        Ok(Self { node_id, addr: addr.parse()? })
    }
}

/// A parsed share link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The file or collection.
    pub id: ContentId,
    /// Display name (a file or directory name: the default output of `get LINK`).
    pub name: Option<String>,
    /// Peers to download from, each pinned to its node ID.
    pub peers: Vec<LinkPeer>,
    /// DHT nodes to find providers through.
    pub bootstrap: Vec<HostPort>,
    /// HTTP mirrors (`http://` or `https://` URLs).
    pub web_seeds: Vec<String>,
}

/// Why a link is refused: which part, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad furymesh link: {part}: {why}")]
pub struct LinkError {
    /// The part of the link at fault (`scheme`, `ID`, `peer #2`, …).
    pub part: String,
    pub why: String,
}

fn bad(part: impl Into<String>, why: impl Into<String>) -> LinkError {
    LinkError { part: part.into(), why: why.into() }
}

impl Link {
    /// A link with only an ID.
    pub fn new(id: ContentId) -> Self {
        Self { id, name: None, peers: Vec::new(), bootstrap: Vec::new(), web_seeds: Vec::new() }
    }
}

/// A display name a link may carry: one safe path component (no `/`, not `.`/`..`, no
/// control characters or backslashes, at most 255 bytes), so `get LINK` can use it as its
/// output name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.contains('/') {
        return Err("contains /".into());
    }
    crate::collection::check_entry_path(name).map_err(|e| e.to_string())
}

fn check_web_seed(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("not an http:// or https:// URL")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("no host".into());
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err("contains spaces or control characters".into());
    }
    Ok(())
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{LINK_SCHEME}{}", self.id)?;
        let mut sep = '?';
        let mut field = |f: &mut fmt::Formatter<'_>, key: &str, value: &str| {
            let r = write!(f, "{sep}{key}={}", utf8_percent_encode(value, VALUE));
            sep = '&';
            r
        };
        if let Some(n) = &self.name {
            field(f, "name", n)?;
        }
        for p in &self.peers {
            field(f, "peer", &p.to_string())?;
        }
        for b in &self.bootstrap {
            field(f, "bootstrap", &b.to_string())?;
        }
        for w in &self.web_seeds {
            field(f, "web-seed", w)?;
        }
        Ok(())
    }
}

impl FromStr for Link {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, LinkError> {
        if s.len() > LINK_MAX_BYTES {
            return Err(bad("link", format!("{} bytes, more than {LINK_MAX_BYTES}", s.len())));
        }
        let rest = s
            .get(..LINK_SCHEME.len())
            .filter(|p| p.eq_ignore_ascii_case(LINK_SCHEME))
            .map(|_| &s[LINK_SCHEME.len()..])
            .ok_or_else(|| bad("scheme", "a link starts with furymesh:"))?;
        let (id, query) = rest.split_once('?').unwrap_or((rest, ""));
        let id: ContentId = id.parse().map_err(|e| bad(format!("ID {id:?}"), format!("{e}")))?;
        let mut link = Self::new(id);
        let (mut peers, mut boots, mut seeds) = (0, 0, 0);
        for (i, pair) in query.split('&').enumerate().filter(|(_, p)| !p.is_empty()) {
            let (key, raw) =
                pair.split_once('=').ok_or_else(|| bad(format!("field {}", i + 1), "no ="))?;
            let value = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| bad(format!("field {key:?}"), "not UTF-8 once decoded"))?;
            match key {
                "name" if link.name.is_some() => return Err(bad("name", "given twice")),
                "name" => {
                    check_name(&value).map_err(|why| bad(format!("name {value:?}"), why))?;
                    link.name = Some(value.into_owned());
                }
                "peer" => {
                    peers += 1;
                    let p = value
                        .parse()
                        .map_err(|why| bad(format!("peer #{peers} {value:?}"), why))?;
                    link.peers.push(p);
                }
                "bootstrap" => {
                    boots += 1;
                    let b = value
                        .parse()
                        .map_err(|why| bad(format!("bootstrap #{boots} {value:?}"), why))?;
                    link.bootstrap.push(b);
                }
                "web-seed" => {
                    seeds += 1;
                    check_web_seed(&value)
                        .map_err(|why| bad(format!("web-seed #{seeds} {value:?}"), why))?;
                    link.web_seeds.push(value.into_owned());
                }
                other => return Err(bad(format!("field {other:?}"), "unknown field")),
            }
        }
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_link_round_trips_and_reads_as_documented() {
        let id: ContentId = format!("c-{}", "ab".repeat(32)).parse().unwrap();
        let link = Link {
            id,
            name: Some("release 1.0 & co".into()),
            peers: vec!["9c41e9c4e7a1c9a9f1b2c3d4e5f60718293a4b5c@seed.example.org:7420"
                .parse()
                .unwrap()],
            bootstrap: vec!["[::1]:7420".parse().unwrap()],
            web_seeds: vec!["https://mirror.example.org/r?x=1".into()],
        };
        let text = link.to_string();
        assert!(
            text.starts_with(&format!(
                "furymesh:c-{}?name=release%201.0%20%26%20co&peer=",
                "ab".repeat(32)
            )),
            "{text}"
        );
        assert_eq!(text.parse::<Link>(), Ok(link));
    }

    #[test]
    fn malformed_links_name_the_bad_part() {
        let id = "ab".repeat(32);
        let part = |s: &str| s.parse::<Link>().unwrap_err().part;
        assert_eq!(part(&format!("magnet:{id}")), "scheme");
        assert!(part("furymesh:abc").starts_with("ID"));
        assert!(part(&format!("furymesh:{id}?peer=1.2.3.4:5")).starts_with("peer #1"));
        assert!(
            part(&format!("furymesh:{id}?peer={}@h:99999", "cd".repeat(20))).starts_with("peer #1")
        );
        assert!(part(&format!("furymesh:{id}?bootstrap=h")).starts_with("bootstrap #1"));
        assert!(part(&format!("furymesh:{id}?name=..")).starts_with("name"));
        assert!(part(&format!("furymesh:{id}?name=a%2Fb")).starts_with("name"));
        assert!(part(&format!("furymesh:{id}?web-seed=ftp://x")).starts_with("web-seed #1"));
        assert!(part(&format!("furymesh:{id}?colour=red")).contains("colour"));
        assert!(part(&format!("furymesh:{id}?name=%FF")).contains("name"));
        assert_eq!(part(&format!("furymesh:{id}?name=a&name=b")), "name");
    }
}
