//! Share links round-trip: any link `Link` can hold prints to a string that parses back to
//! the same link (issue 15, item 3).

use furymesh::crypto::{ContentId, FileId, NodeId};
use furymesh::link::{HostPort, Link, LinkPeer};
use proptest::prelude::*;

fn content_id() -> impl Strategy<Value = ContentId> {
    (any::<[u8; 32]>(), any::<bool>()).prop_map(|(b, coll)| {
        if coll {
            ContentId::collection(FileId(b))
        } else {
            ContentId::file(FileId(b))
        }
    })
}

fn host_port() -> impl Strategy<Value = HostPort> {
    let host = prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}",
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u8; 16]>().prop_map(|b| std::net::Ipv6Addr::from(b).to_string()),
    ];
    (host, 1u16..).prop_map(|(host, port)| HostPort { host, port })
}

fn name() -> impl Strategy<Value = String> {
    // Any printable text, spaces, `&`, `=`, `%`, `?`, `#` and non-ASCII included.
    "[^/\\\\\\x00-\\x1f\\x7f-\\u{9f}]{1,60}"
        .prop_filter("a safe name", |n| furymesh::link::check_name(n).is_ok())
}

fn link() -> impl Strategy<Value = Link> {
    let peer = (any::<[u8; 20]>(), host_port())
        .prop_map(|(id, addr)| LinkPeer { node_id: NodeId::from_bytes(id), addr });
    let seed =
        "https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[a-zA-Z0-9._~!$&'()*+,;=:@%?#-]{0,30}){0,3}";
    (
        content_id(),
        proptest::option::of(name()),
        proptest::collection::vec(peer, 0..4),
        proptest::collection::vec(host_port(), 0..3),
        proptest::collection::vec(seed, 0..3),
    )
        .prop_map(|(id, name, peers, bootstrap, web_seeds)| Link {
            id,
            name,
            peers,
            bootstrap,
            web_seeds,
        })
}

proptest! {
    #[test]
    fn links_round_trip(l in link()) {
        let text = l.to_string();
        prop_assert!(text.starts_with("furymesh:"));
        prop_assert!(!text.contains(' '), "{}", text);
        prop_assert_eq!(text.parse::<Link>(), Ok(l));
    }

    /// Any string is refused or parsed without a panic, and what parses prints back to a
    /// link that parses to the same value.
    #[test]
    fn any_text_parses_or_is_refused(s in "furymesh:(c-)?[0-9a-f]{64}(\\?[a-z-]{1,9}=[^&]{0,40}(&[a-z-]{1,9}=[^&]{0,40}){0,4})?") {
        if let Ok(l) = s.parse::<Link>() {
            prop_assert_eq!(l.to_string().parse::<Link>(), Ok(l));
        }
    }
}
