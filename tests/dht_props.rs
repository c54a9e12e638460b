//! Property tests: the routing table agrees with a brute-force model.

// The model's virtual time needs a base instant, and `Instant` has no constructor but `now`;
// nothing depends on its value.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use furymesh::dht::{Contact, DhtConfig, Insertion, NodeId, RoutingTable, BUCKETS};
use proptest::prelude::*;

const K: usize = 3;
const PER_IP_MAX: usize = 2;
const PER_SUBNET_MAX: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Insert(Contact),
    Remove(Contact),
    Closest(NodeId, usize),
}

fn node_id() -> impl Strategy<Value = NodeId> {
    // A few leading bytes from a small set so that buckets fill up and overflow.
    (prop::sample::select(vec![0x00u8, 0x01, 0x40, 0x80, 0xc0, 0xff]), any::<[u8; 19]>()).prop_map(
        |(first, rest)| {
            let mut bytes = [0; 20];
            bytes[0] = first;
            bytes[1..].copy_from_slice(&rest);
            NodeId::from_bytes(bytes)
        },
    )
}

fn contact() -> impl Strategy<Value = Contact> {
    (node_id(), 0u8..3, 0u8..4, 1u16..3).prop_map(|(id, subnet, host, port)| Contact {
        id,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, subnet, host)), port),
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => contact().prop_map(Op::Insert),
        1 => contact().prop_map(Op::Remove),
        1 => (node_id(), 0usize..12).prop_map(|(t, n)| Op::Closest(t, n)),
    ]
}

fn brute_force_closest(contacts: &[Contact], target: &NodeId, n: usize) -> Vec<Contact> {
    let mut sorted = contacts.to_vec();
    sorted.sort_by_key(|c| c.id.distance(target));
    sorted.truncate(n);
    sorted
}

fn check_caps(table: &RoutingTable) {
    let snapshot = table.snapshot();
    for contact in &snapshot {
        let ip = contact.addr.ip();
        let same_ip = snapshot.iter().filter(|c| c.addr.ip() == ip).count();
        assert!(same_ip <= PER_IP_MAX);
        let subnet = |a: &SocketAddr| match a.ip() {
            IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
            IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
        };
        let same_subnet =
            snapshot.iter().filter(|c| subnet(&c.addr) == subnet(&contact.addr)).count();
        assert!(same_subnet <= PER_SUBNET_MAX);
    }
    let total: usize = (0..BUCKETS).map(|i| table.bucket_contacts(i).len()).sum();
    assert_eq!(total, snapshot.len());
    for i in 0..BUCKETS {
        assert!(table.bucket_contacts(i).len() <= K, "bucket {i} over k");
    }
}

proptest! {
    #[test]
    fn routing_table_matches_model(ops in prop::collection::vec(op(), 1..200)) {
        let config = DhtConfig {
            k: K,
            per_ip_max: PER_IP_MAX,
            per_subnet_max: PER_SUBNET_MAX,
            replacements_per_bucket_max: 2,
            ..DhtConfig::default()
        };
        let local = NodeId::from_bytes([0x33; 20]);
        let mut table = RoutingTable::new(local, &config);
        let start = Instant::now();
        let mut offered: BTreeSet<Contact> = BTreeSet::new();
        for (step, op) in ops.into_iter().enumerate() {
            let now = start + Duration::from_secs(step as u64);
            let before: BTreeSet<Contact> = table.snapshot().into_iter().collect();
            match op {
                Op::Insert(contact) => {
                    offered.insert(contact);
                    let outcome = table.insert(now, contact);
                    let after: BTreeSet<Contact> = table.snapshot().into_iter().collect();
                    prop_assert!(after.is_superset(&before), "an insert never evicts");
                    match outcome {
                        Insertion::Added => {
                            prop_assert!(after.contains(&contact));
                            prop_assert_eq!(after.len(), before.len() + 1);
                        }
                        Insertion::Refreshed => prop_assert_eq!(&after, &before),
                        Insertion::Full { lrs } => {
                            prop_assert!(!after.contains(&contact));
                            prop_assert!(after.contains(&lrs));
                            prop_assert_eq!(lrs.id.distance(&local).leading_zeros(),
                                contact.id.distance(&local).leading_zeros());
                        }
                        Insertion::Rejected(_) => prop_assert_eq!(&after, &before),
                    }
                }
                Op::Remove(contact) => {
                    let removed = table.remove(&contact);
                    prop_assert_eq!(removed, before.contains(&contact));
                    let after: BTreeSet<Contact> = table.snapshot().into_iter().collect();
                    prop_assert!(!after.contains(&contact));
                    let mut kept = before.clone();
                    kept.remove(&contact);
                    prop_assert!(after.is_superset(&kept), "remove evicts only its contact");
                    prop_assert!(after.difference(&kept).all(|c| offered.contains(c)),
                        "promoted contacts were offered before");
                    prop_assert!(after.len() <= kept.len() + 1, "at most one promotion");
                }
                Op::Closest(target, n) => {
                    let snapshot = table.snapshot();
                    let expected = brute_force_closest(&snapshot, &target, n);
                    prop_assert_eq!(table.closest(&target, n), expected);
                }
            }
            table.assert_invariants();
            check_caps(&table);
            let snapshot = table.snapshot();
            prop_assert!(!snapshot.iter().any(|c| c.id == local));
            let target = local;
            prop_assert_eq!(table.closest(&target, K), brute_force_closest(&snapshot, &target, K));
        }
    }

    #[test]
    fn node_id_hex_round_trips(bytes in any::<[u8; 20]>()) {
        let id = NodeId::from_bytes(bytes);
        let text = id.to_string();
        prop_assert_eq!(text.len(), 40);
        prop_assert!(text.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        prop_assert_eq!(text.parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn xor_distance_is_a_metric(
        a in any::<[u8; 20]>(),
        b in any::<[u8; 20]>(),
        c in any::<[u8; 20]>(),
    ) {
        let (a, b, c) = (NodeId::from_bytes(a), NodeId::from_bytes(b), NodeId::from_bytes(c));
        prop_assert_eq!(a.distance(&b), b.distance(&a));
        prop_assert_eq!(a.distance(&a).leading_zeros(), 160);
        // Unidirectional: for a given a and distance there is exactly one b.
        if b != c {
            prop_assert_ne!(a.distance(&b), a.distance(&c));
        }
    }
}
