//! Coalescing connection attempts into `network_request` events, so that
//! installing two hundred packages says so in a handful of events rather
//! than hundreds: attempts with the same host, port, decision and reason
//! are summed until that group has been quiet for [`QUIET`], or has waited
//! [`MAX_WAIT`], whichever comes first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::events::{EventKind, NetworkDecision};

/// A group is published once no attempt joined it for this long...
pub const QUIET: Duration = Duration::from_secs(1);
/// ...or once its first attempt has waited this long.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// Most groups held at once; attempts for further hosts are summed into
/// one group per decision (host [`OTHER_HOSTS`], port 0).
pub const MAX_GROUPS: usize = 256;
/// The host of the group that sums attempts past [`MAX_GROUPS`].
pub const OTHER_HOSTS: &str = "(other hosts)";

/// One connection attempt, as it ended.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub host: String,
    pub port: u16,
    pub decision: NetworkDecision,
    pub reason: String,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub started: Instant,
    pub ended: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: u16,
    decision: NetworkDecision,
    reason: String,
}

#[derive(Debug)]
struct Group {
    connections: u64,
    bytes_up: u64,
    bytes_down: u64,
    first_start: Instant,
    last_end: Instant,
    /// When its first attempt was recorded, and its latest.
    opened: Instant,
    touched: Instant,
}

/// Attempts not yet published, grouped.
#[derive(Debug, Default)]
pub struct NetworkLog {
    groups: HashMap<Key, Group>,
}

impl NetworkLog {
    pub fn record(&mut self, a: Attempt) {
        let now = Instant::now();
        let mut key = Key {
            host: a.host,
            port: a.port,
            decision: a.decision,
            reason: a.reason,
        };
        if self.groups.len() >= MAX_GROUPS && !self.groups.contains_key(&key) {
            // A flood of different hosts stays a bounded number of events.
            key = Key {
                host: OTHER_HOSTS.into(),
                port: 0,
                decision: key.decision,
                reason: "more different hosts than are listed one by one".into(),
            };
        }
        let group = self.groups.entry(key).or_insert_with(|| Group {
            connections: 0,
            bytes_up: 0,
            bytes_down: 0,
            first_start: a.started,
            last_end: a.ended,
            opened: now,
            touched: now,
        });
        group.connections += 1;
        group.bytes_up += a.bytes_up;
        group.bytes_down += a.bytes_down;
        group.first_start = group.first_start.min(a.started);
        group.last_end = group.last_end.max(a.ended);
        group.touched = now;
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The events of the groups due at `now` (every group when `all`),
    /// removed from the log.
    pub fn take_due(&mut self, now: Instant, all: bool) -> Vec<EventKind> {
        let due: Vec<Key> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                all || now.duration_since(g.touched) >= QUIET
                    || now.duration_since(g.opened) >= MAX_WAIT
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut events: Vec<(Instant, EventKind)> = due
            .into_iter()
            .filter_map(|k| {
                let g = self.groups.remove(&k)?;
                Some((
                    g.first_start,
                    EventKind::NetworkRequest {
                        host: k.host,
                        port: k.port,
                        decision: k.decision,
                        reason: k.reason,
                        bytes_up: g.bytes_up,
                        bytes_down: g.bytes_down,
                        duration_ms: g.last_end.duration_since(g.first_start).as_millis() as u64,
                        connections: g.connections,
                    },
                ))
            })
            .collect();
        events.sort_by_key(|(started, _)| *started);
        events.into_iter().map(|(_, e)| e).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(host: &str, decision: NetworkDecision, up: u64, down: u64) -> Attempt {
        let now = Instant::now();
        Attempt {
            host: host.into(),
            port: 443,
            decision,
            reason: "allowed by *".into(),
            bytes_up: up,
            bytes_down: down,
            started: now,
            ended: now + Duration::from_millis(5),
        }
    }

    #[test]
    fn two_hundred_connections_to_one_host_are_one_event() {
        let mut log = NetworkLog::default();
        for _ in 0..200 {
            log.record(attempt(
                "files.example.org",
                NetworkDecision::Allowed,
                10,
                1000,
            ));
        }
        log.record(attempt("evil.example.org", NetworkDecision::Denied, 0, 0));
        assert!(
            log.take_due(Instant::now(), false).is_empty(),
            "not quiet yet"
        );
        let events = log.take_due(Instant::now() + QUIET, false);
        assert_eq!(events.len(), 2);
        let EventKind::NetworkRequest {
            connections,
            bytes_up,
            bytes_down,
            ..
        } = events
            .iter()
            .find(|e| matches!(e, EventKind::NetworkRequest { host, .. } if host == "files.example.org"))
            .unwrap()
        else {
            unreachable!()
        };
        assert_eq!((*connections, *bytes_up, *bytes_down), (200, 2000, 200_000));
        assert!(log.is_empty());
    }

    #[test]
    fn a_flood_of_different_hosts_stays_a_bounded_number_of_events() {
        let mut log = NetworkLog::default();
        for i in 0..10_000 {
            log.record(attempt(
                &format!("h{i}.example.org"),
                NetworkDecision::Denied,
                0,
                0,
            ));
        }
        let events = log.take_due(Instant::now() + QUIET, false);
        assert_eq!(events.len(), MAX_GROUPS + 1);
        let summed = events
            .iter()
            .find_map(|e| match e {
                EventKind::NetworkRequest {
                    host, connections, ..
                } if host == OTHER_HOSTS => Some(*connections),
                _ => None,
            })
            .unwrap();
        assert_eq!(summed, 10_000 - MAX_GROUPS as u64);
    }

    #[test]
    fn a_busy_group_is_published_after_the_longest_wait() {
        let mut log = NetworkLog::default();
        log.record(attempt("a.example.org", NetworkDecision::Allowed, 1, 1));
        // Touched just now, but opened long ago (as if it stayed busy).
        let later = Instant::now() + MAX_WAIT;
        log.groups.values_mut().for_each(|g| g.touched = later);
        assert_eq!(log.take_due(later, false).len(), 1);
    }
}
