//! One hosted copyset's replicas and who leads it. Leadership is a decision of this
//! type alone, so the services ask `leader()`/`is_leader()` and never look at member
//! order themselves.
//!
//! Today the leader is always `members[0]` (the preferred leader the MDS lists first):
//! there is no failover, so a dead `members[0]` leaves the copyset without a serving
//! leader until it returns. A failover policy would change `leader` here and nothing in
//! the services.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{HostedCopyset, PeerEntry};

#[derive(Debug)]
pub(crate) struct CopysetState {
    pub logical_pool_id: u32,
    pub copyset_id: u32,
    members: Vec<PeerEntry>,
    /// This chunkserver's position in `members`.
    self_index: usize,
    /// Writes applied here, leader or follower; reported as `appliedIndex`.
    applied_index: AtomicU64,
}

impl CopysetState {
    /// `None` when this chunkserver is not among the copyset's members (a config error
    /// the caller reports) or the copyset has no members.
    pub fn new(hosted: &HostedCopyset, self_id: u32) -> Option<Self> {
        let self_index = hosted.members.iter().position(|m| m.id == self_id)?;
        Some(CopysetState {
            logical_pool_id: hosted.logical_pool_id,
            copyset_id: hosted.copyset_id,
            members: hosted.members.clone(),
            self_index,
            applied_index: AtomicU64::new(0),
        })
    }

    pub fn leader(&self) -> &PeerEntry {
        // `new` guarantees at least one member (this chunkserver).
        &self.members[0]
    }

    pub fn is_leader(&self) -> bool {
        self.self_index == 0
    }

    /// Every member except this chunkserver, in order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerEntry> {
        let me = self.self_index;
        self.members
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != me)
            .map(|(_, m)| m)
    }

    pub fn is_member(&self, id: u32) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    /// Replicas that must hold a write before it is acknowledged.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Relaxed)
    }

    pub fn bump_applied_index(&self) -> u64 {
        self.applied_index.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// braft's PeerId text for a replica, as Curve's `Peer.address` and `redirect` carry it.
pub(crate) fn peer_id_text(peer: &PeerEntry) -> String {
    format!("{}:0", peer.addr)
}
