//! The leader's side of replication: sends an applied write to every other member with
//! `curvefs.local.ReplicaService/ReplicateWrite` and tallies who has it. There is no log:
//! a member that cannot be reached misses the write until the leader's catch-up copy
//! (election.rs) brings it the whole chunk.
//!
//! ReplicateWrite (writes, catch-up pieces, heartbeats) goes over baidu_std, the data as
//! the attachment: the frame's buffers reach the socket as they are, where tonic copies the
//! data into HTTP/2 frames and both ends pay for HPACK and flow control. On two shared
//! cores that was a large part of a replicated write's cost (README, Performance).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use curve_proto::local::{ReplicateKind, ReplicateWriteRequest, ReplicateWriteResponse};
use futures::future::join_all;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::copyset::{CopysetState, Role};
use crate::store::ChunkKey;
use crate::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};

/// The service and method ReplicateWrite has on the baidu_std face (baidu_std.rs).
pub(crate) const REPLICA_SERVICE: &str = "curvefs.local.ReplicaService";
pub(crate) const REPLICATE_WRITE: &str = "ReplicateWrite";

/// A follower slower than this is treated as not live for that write; Curve's client
/// waits 1 s for the whole WriteChunk by default, so longer would only stall it.
pub(crate) const REPLICATE_DEADLINE: Duration = Duration::from_secs(1);
/// A refused connection answers in microseconds on loopback; this bounds a black hole.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// What one follower did with a replicated write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplicaOutcome {
    Applied,
    /// Connection refused, reset or deadline passed: the follower is not live.
    Unreachable,
    /// The follower answered and did not apply it (a CHUNK_OP_STATUS value).
    Refused(u32),
    /// Not sent: the follower recently failed to answer (see `PeerChannels::suspects`).
    Skipped,
}

/// Reused connections per peer address: a gRPC channel (ReplicaState; tonic reconnects it
/// by itself after the peer comes back) and a baidu_std one (ReplicateWrite; replaced by a
/// new connection once it failed).
#[derive(Default)]
pub(crate) struct PeerChannels {
    channels: Mutex<HashMap<String, Channel>>,
    brpc: Mutex<HashMap<String, Arc<curve_brpc::Channel>>>,
    /// Peers whose last replicated write or catch-up piece went unanswered. Writes skip
    /// them while a majority is reachable without them, so a hung (SIGSTOPped) follower
    /// costs one deadline instead of one per write; the writes they miss are marked
    /// for catch-up. Any answer from the peer (a heartbeat, every tick) clears this.
    suspects: Mutex<HashSet<String>>,
}

impl PeerChannels {
    /// A leader that just took over from the member at `addr`, which stopped answering:
    /// its first writes need not each wait a deadline to learn that. Its next answer (a
    /// heartbeat, every tick) clears this, as for any suspect.
    pub fn suspect(&self, addr: &str) {
        self.suspects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr.to_string());
    }

    pub fn is_suspect(&self, addr: &str) -> bool {
        self.suspects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(addr)
    }

    fn record(&self, addr: &str, outcome: ReplicaOutcome, deadline: Duration) {
        let mut suspects = self.suspects.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            ReplicaOutcome::Applied | ReplicaOutcome::Refused(_) => {
                suspects.remove(addr);
            }
            // A heartbeat's short deadline says little about a loaded peer; only the
            // full write deadline makes it suspect.
            ReplicaOutcome::Unreachable if deadline >= REPLICATE_DEADLINE => {
                suspects.insert(addr.to_string());
            }
            ReplicaOutcome::Unreachable | ReplicaOutcome::Skipped => {}
        }
    }

    pub fn channel(&self, addr: &str) -> Option<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(addr) {
            return Some(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?;
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Some(channel)
    }
}

impl PeerChannels {
    /// The peer's baidu_std connection, connecting (within `CONNECT_TIMEOUT`) if there is
    /// none or the last one failed. Two writes racing to connect both may; one is kept.
    async fn brpc(&self, addr: &str) -> Option<Arc<curve_brpc::Channel>> {
        let lock = || self.brpc.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = lock().get(addr).filter(|c| c.is_usable()) {
            return Some(c.clone());
        }
        let fresh =
            curve_brpc::Channel::connect(addr, CONNECT_TIMEOUT, curve_brpc::DEFAULT_MAX_BODY)
                .await
                .ok()?;
        let mut map = lock();
        let kept = match map.get(addr) {
            Some(c) if c.is_usable() => c.clone(),
            _ => {
                let c = Arc::new(fresh);
                map.insert(addr.to_string(), c.clone());
                c
            }
        };
        Some(kept)
    }
}

/// Sends one ReplicateWrite (a write, a catch-up piece or a heartbeat) to `addr`, over
/// baidu_std with the data as the attachment.
pub(crate) async fn send_replicate(
    channels: &PeerChannels,
    addr: &str,
    mut request: ReplicateWriteRequest,
    deadline: Duration,
) -> ReplicaOutcome {
    let data = std::mem::take(&mut request.data);
    let payload = Bytes::from(request.encode_to_vec());
    send_encoded(channels, addr, payload, data, deadline).await
}

/// [`send_replicate`] with the request already encoded (without its data), so a write
/// going to several followers is encoded once.
async fn send_encoded(
    channels: &PeerChannels,
    addr: &str,
    payload: Bytes,
    data: Bytes,
    deadline: Duration,
) -> ReplicaOutcome {
    let call = async {
        let channel = channels.brpc(addr).await?;
        let reply = channel
            .call(REPLICA_SERVICE, REPLICATE_WRITE, payload, data, deadline)
            .await
            .ok()?;
        ReplicateWriteResponse::decode(reply.payload).ok()
    };
    // The deadline also bounds the connect.
    let outcome = match tokio::time::timeout(deadline, call).await {
        Ok(Some(resp)) => match resp.status {
            0 => ReplicaOutcome::Applied,
            s => ReplicaOutcome::Refused(s),
        },
        Ok(None) | Err(_) => ReplicaOutcome::Unreachable,
    };
    channels.record(addr, outcome, deadline);
    outcome
}

/// What a replicated chunk operation is besides its data (see `ReplicateKind` in
/// local_replica.proto): a write (with the clone location that creates a missing chunk
/// as a clone chunk), a paste, a clone chunk's creation or a catch-up's chunk state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloneFields {
    pub kind: ReplicateKind,
    pub location: Option<String>,
    pub corrected_sn: Option<u64>,
    pub bitmap: Option<Vec<u8>>,
}

impl Default for CloneFields {
    fn default() -> Self {
        CloneFields {
            kind: ReplicateKind::Write,
            location: None,
            corrected_sn: None,
            bitmap: None,
        }
    }
}

impl CloneFields {
    /// Puts these fields into `request`; a plain write carries none of them.
    pub fn fill(&self, request: &mut ReplicateWriteRequest) {
        if self.kind != ReplicateKind::Write {
            request.kind = Some(self.kind as i32);
        }
        request.location.clone_from(&self.location);
        request.corrected_sn = self.corrected_sn;
        request.clone_bitmap = self.bitmap.clone().map(Bytes::from);
    }
}

/// Sends the write to every peer of the copyset concurrently (suspects only when a
/// majority needs them); one outcome per peer, with the peer's member index.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the request's fields, each as the leader's write holds it"
)]
pub(crate) async fn replicate_write(
    channels: &PeerChannels,
    copyset: &CopysetState,
    self_id: u32,
    key: ChunkKey,
    offset: u32,
    data: &Bytes,
    sn: Option<u64>,
    fields: &CloneFields,
) -> Vec<(usize, ReplicaOutcome)> {
    let healthy = copyset
        .peers()
        .filter(|(_, p)| !channels.is_suspect(&p.addr))
        .count();
    let include_suspects = healthy + 1 < copyset.majority();
    // The same request for every follower; the data travels as the frame's attachment,
    // shared with the local write and every other follower without a copy.
    let mut request = ReplicateWriteRequest {
        logic_pool_id: key.logical_pool_id,
        copyset_id: key.copyset_id,
        chunk_id: key.chunk_id,
        offset,
        data: Bytes::new(),
        sn,
        leader_id: self_id,
        // Only heartbeats carry the lagging record.
        lagging_term: None,
        lagging_version: None,
        lagging: Vec::new(),
        term: Some(copyset.term()),
        ..Default::default()
    };
    fields.fill(&mut request);
    let payload = Bytes::from(request.encode_to_vec());
    let calls = copyset.peers().map(|(index, peer)| {
        let skip = !include_suspects && channels.is_suspect(&peer.addr);
        let (payload, data) = (payload.clone(), data.clone());
        async move {
            if skip {
                return (index, ReplicaOutcome::Skipped);
            }
            let outcome =
                send_encoded(channels, &peer.addr, payload, data, REPLICATE_DEADLINE).await;
            (index, outcome)
        }
    });
    join_all(calls).await
}

/// Whether a write applied locally may be acknowledged: every live follower has it and,
/// counting the leader, a majority does. If leadership moved while it was in flight (a
/// hand-back to an earlier member), the new leader must be among those that have it: it
/// took over without waiting for this write, and reads and catch-up copies now come from
/// it, so a write it missed would be acknowledged and then lost.
pub(crate) fn write_committed(
    copyset: &CopysetState,
    outcomes: &[(usize, ReplicaOutcome)],
) -> bool {
    let applied = 1 + outcomes
        .iter()
        .filter(|(_, o)| *o == ReplicaOutcome::Applied)
        .count();
    let refused = outcomes
        .iter()
        .any(|(_, o)| matches!(o, ReplicaOutcome::Refused(_)));
    let leader_has_it = match copyset.role() {
        Role::Leader => true,
        Role::Follower(leader) => outcomes
            .iter()
            .any(|(i, o)| *i == leader && *o == ReplicaOutcome::Applied),
        Role::Unknown => false,
    };
    !refused && leader_has_it && applied >= copyset.majority()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostedCopyset, PeerEntry};

    #[test]
    fn a_write_outlived_by_its_leadership_needs_the_new_leader() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir.as_ref().map(|d| d.path().join("term")) else {
            panic!("tempdir");
        };
        let hosted = HostedCopyset {
            logical_pool_id: 1,
            copyset_id: 1,
            members: (0..3)
                .map(|id| PeerEntry {
                    id,
                    addr: format!("127.0.0.1:{}", 9000 + id),
                })
                .collect(),
        };
        let Some(cs) = CopysetState::new(&hosted, 1, dir, crate::store::Durability::Cache) else {
            panic!("copyset");
        };
        use ReplicaOutcome::{Applied, Refused, Unreachable};
        let missed_by_0 = [(0, Unreachable), (2, Applied)];
        let on_all = [(0, Applied), (2, Applied)];
        cs.lead();
        assert!(write_committed(&cs, &missed_by_0));
        assert!(write_committed(&cs, &on_all));
        assert!(!write_committed(&cs, &[(0, Unreachable), (2, Unreachable)]));
        assert!(!write_committed(&cs, &[(0, Refused(1)), (2, Applied)]));
        // Handed back to member 0 while the write was in flight.
        cs.follow(0);
        assert!(!write_committed(&cs, &missed_by_0));
        assert!(write_committed(&cs, &on_all));
        cs.step_down();
        assert!(!write_committed(&cs, &on_all));
    }
}
