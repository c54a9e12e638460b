//! The iterative lookup state machine (no I/O: the engine sends what it asks for).
//!
//! Candidates are kept closest first. The lookup keeps up to α requests in flight to the
//! closest candidates not yet asked, among the k closest that have neither failed nor gone
//! slow. A request that times out once is resent by the engine and its candidate becomes
//! *slow*: it stops counting against α and its place among the k closest goes to the next
//! candidate, so a dead or forged contact costs a lookup one RPC timeout, not the two it
//! takes to fail. The lookup finishes when the k closest candidates that are neither
//! failed nor slow have all answered — and, when there are fewer than k of them (a small
//! network), no slow request is left that may still answer — or, for a provider lookup,
//! once it holds enough providers. A slow candidate that answers in time counts again.
//!
//! A *round* is one referral hop: seeds are queried in round 1, contacts learned from a
//! round-n reply in round n + 1. The rounds of a lookup are the deepest round it queried.
//!
//! "The k closest" always means the k closest that are neither failed nor slow *with at
//! most `lookup_per_subnet_max` from one /24 (/64)*: the rest of a crowded subnet's
//! candidates stay remembered but wait behind the other subnets' (see
//! `DhtConfig::lookup_per_subnet_max`). One subnet's nodes answering with each other
//! cannot fill the places a lookup queries and converges on.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::dht::config::DhtConfig;
use crate::dht::id::{Contact, Distance, Key, NodeId};
use crate::dht::routing::subnet_of;

/// Why a lookup runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// App `FindNode`: reports the k closest contacts.
    FindNode,
    /// App `FindProviders`: asks `GetProviders` and reports providers.
    FindProviders(Key),
    /// Self-lookup after `Bootstrap` or `Restore`.
    Bootstrap,
    /// Refresh of one bucket.
    Refresh,
    /// First half of an announcement: find the k closest nodes to store at.
    Announce(Key),
}

/// Cost of a finished lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Deepest referral hop queried (see the module doc).
    pub rounds: u32,
    /// Requests sent, resends included.
    pub requests_sent: u32,
    /// Replies received.
    pub responses_received: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    /// Timed out once and resent; no longer counts against α.
    Slow,
    Responded,
    Failed,
}

impl State {
    /// Whether the candidate still competes for a place among the k closest.
    fn counts(self) -> bool {
        !matches!(self, Self::Failed | Self::Slow)
    }
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    contact: Contact,
    depth: u32,
    state: State,
}

#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) purpose: Purpose,
    pub(crate) target: NodeId,
    pub(crate) providers: Vec<Contact>,
    pub(crate) stats: LookupStats,
    local: NodeId,
    candidates: BTreeMap<Distance, Candidate>,
    /// Requests to bootstrap addresses whose node id is not known yet.
    anonymous_inflight: usize,
    k: usize,
    alpha: usize,
    candidates_max: usize,
    per_subnet_max: usize,
    providers_wanted: usize,
}

impl Lookup {
    pub(crate) fn new(
        purpose: Purpose,
        target: NodeId,
        local: NodeId,
        seeds: &[Contact],
        config: &DhtConfig,
    ) -> Self {
        let mut lookup = Self {
            purpose,
            target,
            providers: Vec::new(),
            stats: LookupStats::default(),
            local,
            candidates: BTreeMap::new(),
            anonymous_inflight: 0,
            k: config.k,
            alpha: config.alpha,
            candidates_max: config.lookup_candidates_max,
            per_subnet_max: config.lookup_per_subnet_max,
            providers_wanted: config.lookup_providers_wanted,
        };
        lookup.add_candidates(seeds, 1);
        lookup
    }

    /// Counts a request sent to a bootstrap address (node id unknown until it answers).
    pub(crate) fn add_anonymous(&mut self) {
        self.anonymous_inflight += 1;
        self.stats.requests_sent += 1;
        self.stats.rounds = self.stats.rounds.max(1);
    }

    /// The next contact to query, if α allows one; marks it in flight.
    pub(crate) fn next_query(&mut self) -> Option<Contact> {
        let inflight = self.candidates.values().filter(|c| c.state == State::InFlight).count();
        if inflight + self.anonymous_inflight >= self.alpha {
            return None;
        }
        let next = self.closest(|s| s.counts()).find(|c| c.state == State::Waiting)?;
        let candidate = self.candidates.get_mut(&next.contact.id.distance(&self.target))?;
        candidate.state = State::InFlight;
        self.stats.requests_sent += 1;
        self.stats.rounds = self.stats.rounds.max(candidate.depth);
        Some(candidate.contact)
    }

    /// A reply from `from` (with the contacts and providers it carried). `anonymous` when it
    /// answers a bootstrap request.
    pub(crate) fn on_response(
        &mut self,
        from: Contact,
        anonymous: bool,
        contacts: &[Contact],
        providers: &[Contact],
    ) {
        self.stats.responses_received += 1;
        let distance = from.id.distance(&self.target);
        let depth = if anonymous {
            self.anonymous_inflight = self.anonymous_inflight.saturating_sub(1);
            self.add_candidates(&[from], 1);
            1
        } else {
            match self.candidates.get(&distance) {
                Some(c) if c.contact == from => c.depth,
                _ => return,
            }
        };
        if let Some(candidate) = self.candidates.get_mut(&distance) {
            candidate.state = State::Responded;
        }
        for provider in providers {
            let known = self.providers.iter().any(|p| p.id == provider.id);
            if !known && self.providers.len() < self.providers_wanted {
                self.providers.push(*provider);
            }
        }
        self.add_candidates(contacts, depth + 1);
    }

    /// The request to `contact` timed out once and was resent.
    pub(crate) fn on_slow(&mut self, contact: &Contact) {
        self.stats.requests_sent += 1;
        if let Some(c) = self.candidate_mut(contact) {
            c.state = State::Slow;
        }
    }

    /// The request to `contact` (or to a bootstrap address, when `None`) failed for good.
    pub(crate) fn on_failure(&mut self, contact: Option<&Contact>) {
        match contact {
            None => self.anonymous_inflight = self.anonymous_inflight.saturating_sub(1),
            Some(contact) => {
                if let Some(c) = self.candidate_mut(contact) {
                    c.state = State::Failed;
                }
            }
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        if matches!(self.purpose, Purpose::FindProviders(_))
            && self.providers.len() >= self.providers_wanted
        {
            return true;
        }
        if self.anonymous_inflight > 0 {
            return false;
        }
        let closest = self.closest(|s| s.counts());
        let (mut responded, mut all_responded) = (0, true);
        for c in closest {
            responded += 1;
            all_responded &= c.state == State::Responded;
        }
        // With fewer than k live candidates (a small network), a slow one may be all there
        // is: wait for its resend to answer or fail.
        all_responded
            && (responded >= self.k || !self.candidates.values().any(|c| c.state == State::Slow))
    }

    /// The k closest contacts that answered.
    pub(crate) fn closest_responded(&self) -> Vec<Contact> {
        self.closest(|s| s == State::Responded).map(|c| c.contact).collect()
    }

    /// The k closest candidates whose state passes `keep`, closest first, at most
    /// `per_subnet_max` of them from one subnet (see the module doc).
    fn closest(&self, keep: impl Fn(State) -> bool) -> impl Iterator<Item = &Candidate> {
        let mut subnets: Vec<(IpAddr, usize)> = Vec::new();
        let per_subnet_max = self.per_subnet_max;
        self.candidates
            .values()
            .filter(move |c| keep(c.state))
            .filter(move |c| {
                let subnet = subnet_of(&c.contact.addr);
                match subnets.iter_mut().find(|(s, _)| *s == subnet) {
                    Some((_, n)) if *n >= per_subnet_max => false,
                    Some((_, n)) => {
                        *n += 1;
                        true
                    }
                    None => {
                        subnets.push((subnet, 1));
                        true
                    }
                }
            })
            .take(self.k)
    }

    fn candidate_mut(&mut self, contact: &Contact) -> Option<&mut Candidate> {
        self.candidates
            .get_mut(&contact.id.distance(&self.target))
            .filter(|c| c.contact == *contact)
    }

    fn add_candidates(&mut self, contacts: &[Contact], depth: u32) {
        for contact in contacts {
            if contact.id == self.local {
                continue;
            }
            self.candidates.entry(contact.id.distance(&self.target)).or_insert(Candidate {
                contact: *contact,
                depth,
                state: State::Waiting,
            });
        }
        while self.candidates.len() > self.candidates_max {
            // Forget the farthest candidate that is not awaiting a reply.
            let farthest = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| !matches!(c.state, State::InFlight | State::Slow))
                .map(|(d, _)| *d);
            match farthest {
                Some(distance) => {
                    self.candidates.remove(&distance);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(n: u8) -> Contact {
        let mut bytes = [0; 20];
        bytes[19] = n;
        Contact {
            id: NodeId::from_bytes(bytes),
            addr: format!("10.0.{n}.1:4000").parse().expect("addr"),
        }
    }

    fn config() -> DhtConfig {
        DhtConfig { k: 2, alpha: 2, lookup_candidates_max: 4, ..DhtConfig::default() }
    }

    #[test]
    fn one_subnet_takes_at_most_its_share_of_the_k_closest() {
        // Four candidates closer than any other, all from 10.9.9.0/24; k = 4, cap 2.
        let crowd = |n: u8| {
            let mut bytes = [0; 20];
            bytes[19] = n;
            Contact {
                id: NodeId::from_bytes(bytes),
                addr: format!("10.9.9.{n}:4000").parse().expect("addr"),
            }
        };
        let config = DhtConfig { k: 4, alpha: 8, lookup_per_subnet_max: 2, ..DhtConfig::default() };
        let target = NodeId::from_bytes([0; 20]);
        let seeds = [crowd(1), crowd(2), crowd(3), crowd(4), contact(50), contact(60)];
        let mut lookup = Lookup::new(Purpose::FindNode, target, contact(200).id, &seeds, &config);
        let asked: Vec<Contact> = std::iter::from_fn(|| lookup.next_query()).collect();
        assert_eq!(asked, vec![crowd(1), crowd(2), contact(50), contact(60)]);
        for c in &asked {
            lookup.on_response(*c, false, &[], &[]);
        }
        assert!(lookup.is_finished(), "the k closest by subnet answered");
        assert_eq!(lookup.closest_responded(), asked);
        // When another subnet's candidate fails, the crowd's next is still not asked: its
        // share is used up, and the lookup ends with the fewer it has.
        lookup.on_failure(Some(&contact(60)));
        assert_eq!(lookup.next_query(), None, "the crowd's share is used up");
        assert!(lookup.is_finished());
    }

    #[test]
    fn queries_closest_alpha_and_finishes_on_k_responses() {
        let target = NodeId::from_bytes([0; 20]);
        let local = contact(200).id;
        let mut lookup =
            Lookup::new(Purpose::FindNode, target, local, &[contact(9), contact(8)], &config());
        assert_eq!(lookup.next_query(), Some(contact(8)));
        assert_eq!(lookup.next_query(), Some(contact(9)));
        assert_eq!(lookup.next_query(), None, "alpha reached");
        lookup.on_response(contact(8), false, &[contact(1), contact(2)], &[]);
        assert_eq!(lookup.next_query(), Some(contact(1)), "closer node first");
        assert_eq!(lookup.stats.rounds, 2);
        lookup.on_slow(&contact(9));
        assert_eq!(lookup.next_query(), Some(contact(2)), "slow node frees its slot");
        lookup.on_response(contact(1), false, &[], &[]);
        assert!(!lookup.is_finished());
        lookup.on_failure(Some(&contact(2)));
        // k closest non-failed: 1 (responded), 8 (responded).
        assert!(lookup.is_finished());
        assert_eq!(lookup.closest_responded(), vec![contact(1), contact(8)]);
        assert_eq!(lookup.stats.requests_sent, 5);
        assert_eq!(lookup.stats.responses_received, 2);
    }

    #[test]
    fn anonymous_bootstrap_and_candidate_bound() {
        let target = NodeId::from_bytes([0; 20]);
        let local = contact(200).id;
        let mut lookup = Lookup::new(Purpose::Bootstrap, target, local, &[], &config());
        lookup.add_anonymous();
        assert!(!lookup.is_finished());
        let many: Vec<Contact> = (10..20).map(contact).chain([contact(200)]).collect();
        lookup.on_response(contact(30), true, &many, &[]);
        assert_eq!(lookup.candidates.len(), 4, "bounded, local id skipped");
        assert_eq!(lookup.next_query(), Some(contact(10)));
        assert_eq!(lookup.stats.rounds, 2);
    }

    #[test]
    fn provider_lookup_stops_when_enough_providers() {
        let key = Key::from_bytes([0; 20]);
        let config = DhtConfig { lookup_providers_wanted: 1, ..config() };
        let local = contact(200).id;
        let mut lookup =
            Lookup::new(Purpose::FindProviders(key), key.target(), local, &[contact(5)], &config);
        assert_eq!(lookup.next_query(), Some(contact(5)));
        lookup.on_response(contact(5), false, &[contact(1)], &[contact(77), contact(78)]);
        assert!(lookup.is_finished());
        assert_eq!(lookup.providers, vec![contact(77)]);
    }
}
