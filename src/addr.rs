//! IP addresses in their one byte form, shared by the wire format (DHT contacts, provider
//! records) and signaling envelopes (`crypto::signal`), so both encode an address alike.
//! Pure functions: the lowest layer, importing nothing of the crate.

use std::net::{IpAddr, Ipv6Addr};

/// The one wire form of an IP address (contacts, signed provider records and signaling
/// payloads alike): 16 bytes of IPv6, an IPv4 address as its IPv4-mapped IPv6 address.
pub(crate) fn ip_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`ip_octets`]: IPv4-mapped addresses come back as IPv4.
pub(crate) fn ip_from_octets(octets: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(octets);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}
