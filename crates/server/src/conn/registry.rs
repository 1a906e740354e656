//! The open connections, for the connection limits (see the parent module).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::ConnLimits;
use super::activity::Activity;
use crate::net::AddressGroup;

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Full {
    Server,
    Address,
}

/// The open connections, for the limits: how many in all and per address group, and what each
/// is doing, so that a full server can make room.
///
/// When a limit is reached, the connection that has waited longest without a request in flight
/// — one still sending its headers (or nothing at all), or an idle keep-alive one — is closed to
/// admit the new one (of the same address group, when it is that group's share that is full).
/// A flood of slow connections therefore pushes out its own oldest members rather than every
/// newcomer: a real client, whose request arrives at once, is served. Connections with a request
/// in flight — a streamed answer (the revocation feed) until its stream ends — are never pushed
/// out; when all are busy, the newcomer is refused.
#[derive(Debug, Default)]
pub(super) struct Registry(pub(super) Mutex<Open>);

#[derive(Debug, Default)]
pub(super) struct Open {
    pub(super) next: u64,
    pub(super) connections: HashMap<u64, (Option<AddressGroup>, Arc<Activity>)>,
    pub(super) per_group: HashMap<AddressGroup, usize>,
}

/// A connection's place in the [`Registry`]; gives it back when dropped.
pub(super) struct Ticket(Arc<Registry>, u64);

impl Registry {
    /// Admits a connection from `group` (`None`: a trusted proxy, which has no share); with the
    /// limit that was full if another connection was pushed out to make room.
    pub(super) fn admit(
        self: &Arc<Self>,
        group: Option<AddressGroup>,
        activity: Arc<Activity>,
        limits: &ConnLimits,
    ) -> Result<(Ticket, Option<Full>), Full> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let group_full =
            group.is_some_and(|g| open.per_group.get(&g).copied().unwrap_or(0) >= limits.max_connections_per_address);
        let full = if group_full {
            Some(Full::Address)
        } else if open.connections.len() >= limits.max_connections {
            Some(Full::Server)
        } else {
            None
        };
        if let Some(full) = full {
            let candidates = open.connections.values().filter(|(g, _)| full == Full::Server || *g == group);
            let victim = candidates
                .filter_map(|(_, a)| a.waiting_since().map(|since| (since, a)))
                .min_by_key(|(since, _)| *since);
            let Some((_, victim)) = victim else {
                return Err(full);
            };
            victim.evict();
        }
        let id = open.next;
        open.next += 1;
        open.connections.insert(id, (group, activity));
        if let Some(group) = group {
            *open.per_group.entry(group).or_default() += 1;
        }
        Ok((Ticket(self.clone(), id), full))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((Some(group), _)) = open.connections.remove(&self.1)
            && let Some(count) = open.per_group.get_mut(&group)
        {
            *count -= 1;
            if *count == 0 {
                open.per_group.remove(&group);
            }
        }
    }
}
