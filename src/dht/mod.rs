//! Kademlia DHT as a sans-IO core (placeholder; see issue 3).
