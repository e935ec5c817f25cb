//! The chunkserver's background leadership loop (rules in copyset.rs), every ~500 ms for
//! each hosted copyset: a leader heartbeats its followers and copies chunks to those
//! that may lack writes; a follower probes its leader and fails over when it stops
//! answering; a chunkserver that does not know the leader yet (startup) asks its peers.
//!
//! Heartbeats travel as `ReplicateWrite` requests that cannot be writes: empty `data`
//! at offset `HEARTBEAT_OFFSET`, `sn` = the leader's term, `chunkId` = 1 when the
//! follower holds every acknowledged write, 0 otherwise, and `HANDOVER` (2) when it
//! does and the sender, which just stopped leading for a `TransferLeader`, asks it to
//! take over now (braft's TimeoutNow). A follower answers a
//! heartbeat with status 0, or with CHUNK_EXIST (11) to a "not in sync" heartbeat when
//! it held every write within the last `RECENTLY_IN_SYNC` (so a new leader copies only
//! recently written chunks to it). Heartbeats also carry the leader's record of the
//! members lacking writes (`laggingTerm`/`laggingVersion`/`lagging`); a follower that
//! holds a record of a newer term answers BACKWARD.
//!
//! A chunkserver that knows no leader (startup), or whose leader stopped answering,
//! asks its peers `ReplicaState` (term and lagging record) before it claims
//! leadership: see `claim` and `choose`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use curve_proto::chunkserver::cli_service2_client::CliService2Client;
use curve_proto::chunkserver::{ChunkOpStatus, GetLeaderRequest2};
use curve_proto::common::Peer;
use curve_proto::local::replica_service_client::ReplicaServiceClient;
use curve_proto::local::{ReplicaStateRequest, ReplicateKind, ReplicateWriteRequest};
use futures::future::join_all;
use tokio::task::JoinSet;

use crate::copyset::{
    CopysetState, Dirty, Lagging, PROBE_FAILURES_TO_FAILOVER, Role, peer_id_text,
};
use crate::replication::{CloneFields, REPLICATE_DEADLINE, ReplicaOutcome, send_replicate};
use crate::service::Node;
use crate::store::{ChunkKey, ChunkView};

pub(crate) const TICK: Duration = Duration::from_millis(500);
/// GetLeader probes and heartbeats: short, so one dead peer cannot stretch a tick.
const PROBE_DEADLINE: Duration = Duration::from_millis(300);
pub(crate) const HEARTBEAT_OFFSET: u32 = u32::MAX;
/// A heartbeat's `chunkId` asking an in-sync follower to take leadership at once.
pub(crate) const HANDOVER: u64 = 2;
/// A copy waits this long for the chunk's writes in flight (at most one replication
/// deadline each) before giving up until the next tick.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a chunk's writes are held back for one copy (a 16 MiB chunk takes ~20 ms).
const CHUNK_COPY_TIMEOUT: Duration = Duration::from_secs(4);
/// Catch-up copies go in pieces of this size.
const CATCH_UP_PIECE: u64 = 1024 * 1024;
/// gRPC status message of GetLeader while this chunkserver knows no leader, so a probing
/// peer can tell "alive, no leader yet" from a connection failure (both UNAVAILABLE).
pub(crate) const NO_LEADER_MESSAGE: &str = "no leader known for this copyset";

/// Runs until dropped; the catch-up copies it started stop with it.
pub(crate) async fn run(node: Arc<Node>) {
    let mut catch_ups = JoinSet::new();
    loop {
        // Rounds start every TICK however long the last one waited: a round that waits
        // out a hung peer's PROBE_DEADLINE must not push the next one back too, or a
        // paused leader is noticed only after rounds of TICK + PROBE_DEADLINE (its
        // followers took over ~3.1 s after the pause instead of ~2 s).
        let next_round = tokio::time::Instant::now() + TICK;
        let ticks = node.copysets().map(|cs| tick(&node, cs));
        for (cs, follower) in join_all(ticks).await.into_iter().flatten() {
            catch_ups.spawn(catch_up(node.clone(), cs, follower));
        }
        // Reap finished copies so the set does not grow.
        while catch_ups.try_join_next().is_some() {}
        tokio::time::sleep_until(next_round).await;
    }
}

/// One round for one copyset; returns the catch-up copies to start.
async fn tick(node: &Arc<Node>, cs: &Arc<CopysetState>) -> Vec<(Arc<CopysetState>, usize)> {
    match cs.role() {
        Role::Leader => {
            let copies = heartbeat(node, cs).await;
            if cs.is_leader()
                && let Some(to) = cs.transfer_due()
            {
                hand_over(node, cs, to).await;
            }
            return copies;
        }
        Role::Follower(leader) => probe(node, cs, leader).await,
        Role::Unknown => discover(node, cs).await,
    }
    // A new leader starts its followers' catch-up now rather than a tick later: until
    // they are heartbeated as in sync, none of them could take over from it.
    if cs.is_leader() {
        heartbeat(node, cs).await
    } else {
        Vec::new()
    }
}

/// Leader: heartbeats every follower; returns the catch-up copies to start.
async fn heartbeat(node: &Arc<Node>, cs: &Arc<CopysetState>) -> Vec<(Arc<CopysetState>, usize)> {
    let beats = cs
        .peers()
        .map(|(index, _)| async move { (index, beat(node, cs, index).await) });
    let outcomes = join_all(beats).await;
    let answered = |o: &ReplicaOutcome| {
        *o == ReplicaOutcome::Applied
            || *o == ReplicaOutcome::Refused(ChunkOpStatus::ChunkExist as u32)
    };
    if outcomes.iter().filter(|(_, o)| answered(o)).count() + 1 >= cs.majority() {
        cs.note_majority();
    }
    let backward = ReplicaOutcome::Refused(ChunkOpStatus::Backward as u32);
    if outcomes.iter().any(|(_, o)| *o == backward) && cs.is_leader() {
        // A follower has seen a newer term: another member leads now.
        cs.step_down();
        return Vec::new();
    }
    // Only followers that just answered get a copy: a copy holds back writes to its
    // chunk, and one to a hung follower would hold them for a whole deadline.
    let mut start = Vec::new();
    let mut election = cs.election();
    for (index, outcome) in &outcomes {
        if let Some(f) = election.followers.get_mut(*index)
            && answered(outcome)
            && !f.in_sync
            && !f.catching_up
        {
            f.catching_up = true;
            start.push((cs.clone(), *index));
        }
    }
    start
}

/// Leader: one heartbeat to follower `index`, telling it whether it holds every write.
async fn beat(node: &Node, cs: &CopysetState, index: usize) -> ReplicaOutcome {
    send_beat(node, cs, index, false).await
}

/// Former leader, right after a `TransferLeader` made it follow `to`: tells `to`
/// (caught up, see `CopysetState::transfer_due`) to lead now instead of noticing a
/// probe round later.
async fn hand_over(node: &Node, cs: &CopysetState, to: usize) {
    tracing::info!(copyset = %cs.name(), to, "handing leadership over");
    cs.follow(to);
    if send_beat(node, cs, to, true).await != ReplicaOutcome::Applied {
        // Its probes or ours sort it out: whoever the other names leads.
        tracing::warn!(copyset = %cs.name(), to, "transferee did not take the handover");
    }
}

async fn send_beat(node: &Node, cs: &CopysetState, index: usize, handover: bool) -> ReplicaOutcome {
    let Some(peer) = cs.members().get(index) else {
        return ReplicaOutcome::Unreachable;
    };
    let (in_sync, lagging) = {
        let election = cs.election();
        let in_sync = election.followers.get(index).is_some_and(|f| f.in_sync);
        (in_sync, election.lagging.clone())
    };
    let flag = if handover && in_sync {
        HANDOVER
    } else {
        u64::from(in_sync)
    };
    let request = ReplicateWriteRequest {
        logic_pool_id: cs.logical_pool_id,
        copyset_id: cs.copyset_id,
        chunk_id: flag,
        offset: HEARTBEAT_OFFSET,
        data: Bytes::new(),
        sn: Some(cs.term()),
        leader_id: node.id,
        lagging_term: Some(lagging.term),
        lagging_version: Some(lagging.version),
        lagging: lagging.ids.iter().copied().collect(),
        // Heartbeats carry the term in `sn`.
        term: None,
        ..Default::default()
    };
    let outcome = send_replicate(node.channels(), &peer.addr, request, PROBE_DEADLINE).await;
    if outcome == ReplicaOutcome::Applied
        || outcome == ReplicaOutcome::Refused(ChunkOpStatus::ChunkExist as u32)
    {
        let mut election = cs.election();
        // Only a record of this leadership counts (versions restart with each term).
        if election.lagging.term == lagging.term
            && let Some(f) = election.followers.get_mut(index)
        {
            f.lagging_acked = f.lagging_acked.max(lagging.version);
        }
    }
    if outcome == ReplicaOutcome::Refused(ChunkOpStatus::ChunkExist as u32) {
        let mut election = cs.election();
        if let Some(f) = election.followers.get_mut(index) {
            f.recently_in_sync();
        }
    }
    if in_sync && outcome == ReplicaOutcome::Applied {
        let mut election = cs.election();
        if let Some(f) = election.followers.get_mut(index)
            && f.in_sync
        {
            f.in_sync_acked = true;
        }
    }
    outcome
}

/// What a peer said when asked for the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Names this member index.
    Names(usize),
    /// Alive but knows no leader (or named someone outside the copyset).
    NoLeader,
    Unreachable,
}

async fn ask(node: &Node, cs: &CopysetState, index: usize) -> Answer {
    let Some(peer) = cs.members().get(index) else {
        return Answer::Unreachable;
    };
    let Some(channel) = node.channels().channel(&peer.addr) else {
        return Answer::Unreachable;
    };
    let me = &cs.members()[cs.self_index()];
    let request = GetLeaderRequest2 {
        logic_pool_id: cs.logical_pool_id,
        copyset_id: cs.copyset_id,
        peer: Some(Peer {
            id: Some(u64::from(me.id)),
            address: Some(peer_id_text(me)),
        }),
    };
    let mut client = CliService2Client::new(channel);
    match tokio::time::timeout(PROBE_DEADLINE, client.get_leader(request)).await {
        Ok(Ok(resp)) => {
            let leader = resp.into_inner().leader;
            leader
                .address
                .as_deref()
                .and_then(|a| cs.member_by_address(a))
                .map_or(Answer::NoLeader, Answer::Names)
        }
        Ok(Err(status)) if status.message() == NO_LEADER_MESSAGE => Answer::NoLeader,
        Ok(Err(_)) | Err(_) => Answer::Unreachable,
    }
}

/// Follower: is the leader still there, and whom does it name?
async fn probe(node: &Node, cs: &CopysetState, leader: usize) {
    // A heartbeat this round already proved the leader alive; only a member earlier in
    // order still asks, since asking is how it requests leadership back.
    if cs.self_index() > leader {
        let mut election = cs.election();
        let heard = election
            .last_leader_contact
            .is_some_and(|t| t.elapsed() < TICK + TICK / 5);
        if heard {
            if let Some(n) = election.probe_failures.get_mut(leader) {
                *n = 0;
            }
            return;
        }
    }
    let answer = ask(node, cs, leader).await;
    if matches!(answer, Answer::Names(_)) {
        let mut election = cs.election();
        election.last_leader_contact = Some(Instant::now());
        if let Some(n) = election.probe_failures.get_mut(leader) {
            *n = 0;
        }
    }
    match answer {
        Answer::Names(i) if i == leader => {}
        // The leader hands leadership back to us (we are earlier in order and caught up);
        // a stale answer naming us while our record says we lack writes is not enough.
        Answer::Names(i) if i == cs.self_index() => {
            if !cs.self_lagging() {
                cs.lead();
            }
        }
        Answer::Names(i) => cs.follow(i),
        // Alive but not leading (it stepped down, or we followed it as the first
        // candidate and it found it may not lead): as good as gone after a few rounds.
        Answer::NoLeader | Answer::Unreachable => {
            let failures = {
                let mut election = cs.election();
                match election.probe_failures.get_mut(leader) {
                    Some(n) => {
                        *n += 1;
                        *n
                    }
                    None => 0,
                }
            };
            if failures >= PROBE_FAILURES_TO_FAILOVER {
                fail_over(node, cs, leader).await;
            }
        }
    }
}

/// The leader stopped answering: follow whoever leads already, or else the member the
/// rule of `choose` picks (which may be us).
async fn fail_over(node: &Node, cs: &CopysetState, dead: usize) {
    let answers = ask_peers(node, cs, Some(dead)).await;
    if let Some((j, _)) = answers
        .iter()
        .find(|(j, a)| *a == Answer::Names(*j) && *j != dead)
    {
        cs.follow(*j);
        return;
    }
    claim(node, cs, Some(dead)).await;
}

/// What a member answered to `ReplicaState`: its term and lagging record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerState {
    pub term: u64,
    pub lagging: Lagging,
}

/// Asks member `index` for its term and lagging record; `None` if it did not answer
/// within the probe deadline (it may be down or still starting).
async fn ask_state(node: &Node, cs: &CopysetState, index: usize) -> Option<PeerState> {
    let peer = cs.members().get(index)?;
    let channel = node.channels().channel(&peer.addr)?;
    let mut client = ReplicaServiceClient::new(channel);
    let request = ReplicaStateRequest {
        logic_pool_id: cs.logical_pool_id,
        copyset_id: cs.copyset_id,
    };
    // Short: a starting chunkserver must not wait long on a dead peer.
    let resp = tokio::time::timeout(PROBE_DEADLINE, client.replica_state(request))
        .await
        .ok()?
        .ok()?
        .into_inner();
    if resp.status != 0 {
        return None;
    }
    Some(PeerState {
        term: resp.term.unwrap_or(0),
        lagging: Lagging {
            term: resp.lagging_term.unwrap_or(0),
            version: resp.lagging_version.unwrap_or(0),
            ids: resp.lagging.into_iter().collect(),
        },
    })
}

/// Startup: learn the leader from the peers, or claim leadership by `choose`'s rule.
async fn discover(node: &Node, cs: &CopysetState) {
    let me = cs.self_index();
    let answers = ask_peers(node, cs, None).await;
    if let Some((j, _)) = answers.iter().find(|(j, a)| *a == Answer::Names(*j)) {
        cs.follow(*j);
        return;
    }
    if let Some((_, Answer::Names(x))) = answers
        .iter()
        .find(|(_, a)| matches!(a, Answer::Names(x) if *x != me))
    {
        cs.follow(*x);
        return;
    }
    claim(node, cs, None).await;
}

/// Nobody leads (the leader `gone` is dead or hung, or none was known): ask every
/// other member for its term and record, then lead, follow or wait as `choose` says.
async fn claim(node: &Node, cs: &CopysetState, gone: Option<usize>) {
    let me = cs.self_index();
    let asks = cs
        .peers()
        .filter(|(i, _)| Some(*i) != gone)
        .map(|(i, _)| async move { (i, ask_state(node, cs, i).await) });
    let answered = join_all(asks).await;
    let mut states: Vec<Option<PeerState>> = vec![None; cs.members().len()];
    for (i, state) in answered {
        states[i] = state;
    }
    states[me] = Some(PeerState {
        term: cs.term(),
        lagging: cs.lagging(),
    });
    // A new term above every one seen, so no peer takes our heartbeats for stale ones.
    if let Some(max_term) = states.iter().flatten().map(|s| s.term).max() {
        cs.observe_term(max_term);
    }
    let choice = {
        let mut election = cs.election();
        let ids: Vec<u32> = cs.members().iter().map(|m| m.id).collect();
        choose(me, &ids, &states, gone, &mut election.probe_failures)
    };
    match choice {
        Choice::Lead(lagging) => {
            if let Some(peer) = gone.and_then(|g| cs.members().get(g)) {
                node.channels().suspect(&peer.addr);
            }
            cs.lead_with(Some(lagging), true);
        }
        Choice::Follow(i) => cs.follow(i),
        Choice::Wait => {}
    }
}

/// What `choose` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Lead, starting from this record of the members lacking writes.
    Lead(BTreeSet<u32>),
    /// Member `i` is the one to lead: follow it (it decides the same way).
    Follow(usize),
    /// Not enough is known yet: ask again next round.
    Wait,
}

/// Who may lead a copyset, from what its members answered (`states[i]`, `None` for no
/// answer; `states[me]` is ours). Whoever leads copies its chunks over everyone else's,
/// so it must hold every acknowledged write:
/// - a majority, counting us, must have answered: a write acknowledged without member
///   M was recorded as "M lacks writes" by every member that holds it, and those are a
///   majority, so any majority includes one of them (see copyset.rs);
/// - the candidate is not in the newest record (by `(term, version)`) among the answers;
/// - and has the highest term among those that hold every write (one of them led last
///   or followed the last leader);
/// - the first such member in order leads. An earlier member that did not answer is
///   waited for a few rounds (it may be starting and hold a newer record), except
///   `gone`, the leader that just stopped answering.
///
/// `unanswered_rounds` counts those rounds per member.
pub(crate) fn choose(
    me: usize,
    member_ids: &[u32],
    states: &[Option<PeerState>],
    gone: Option<usize>,
    unanswered_rounds: &mut [u32],
) -> Choice {
    let majority = member_ids.len() / 2 + 1;
    if states.iter().flatten().count() < majority {
        // Without a majority we could not serve anyway (no lease), and no record we
        // have seen is sure to be the newest.
        return Choice::Wait;
    }
    let Some(newest) = states
        .iter()
        .flatten()
        .map(|s| &s.lagging)
        .max_by_key(|l| l.key())
    else {
        return Choice::Wait;
    };
    let lacks = |i: usize| member_ids.get(i).is_some_and(|id| newest.ids.contains(id));
    let term_of = |i: usize| states.get(i).and_then(|s| s.as_ref()).map(|s| s.term);
    let top_term = (0..member_ids.len())
        .filter(|&i| !lacks(i))
        .filter_map(term_of)
        .max()
        .unwrap_or(0);
    for i in 0..member_ids.len() {
        if lacks(i) || Some(i) == gone {
            continue;
        }
        match term_of(i) {
            Some(t) if t < top_term => continue,
            Some(_) if i == me => return Choice::Lead(newest.ids.clone()),
            // The first candidate in order is alive: it leads, we follow.
            Some(_) => return Choice::Follow(i),
            None => {
                if let Some(n) = unanswered_rounds.get_mut(i) {
                    *n += 1;
                    if *n < PROBE_FAILURES_TO_FAILOVER {
                        return Choice::Wait;
                    }
                }
            }
        }
    }
    Choice::Wait
}

async fn ask_peers(node: &Node, cs: &CopysetState, skip: Option<usize>) -> Vec<(usize, Answer)> {
    let asks = cs
        .peers()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(i, _)| async move { (i, ask(node, cs, i).await) });
    join_all(asks).await
}

/// Leader: copy the chunks follower `index` may lack, one at a time, then mark it in
/// sync. Gives up on the first failure; the next tick starts again.
async fn catch_up(node: Arc<Node>, cs: Arc<CopysetState>, index: usize) {
    let result = copy_dirty_chunks(&node, &cs, index).await;
    let caught_up = {
        let mut election = cs.election();
        let Some(f) = election.followers.get_mut(index) else {
            return;
        };
        f.catching_up = false;
        let now_in_sync =
            result.is_ok() && matches!(&f.dirty, Dirty::Chunks(set) if set.is_empty());
        if now_in_sync {
            f.in_sync = true;
            tracing::info!(copyset = %cs.name(), follower = index, "follower caught up");
        }
        let in_sync = f.in_sync;
        if now_in_sync {
            // It holds every acknowledged write again; the heartbeat below tells it.
            cs.clear_lagging(&mut election, index);
        }
        in_sync
    };
    // Tell it at once, so it can take over should we die before the next tick.
    if caught_up && cs.is_leader() {
        beat(&node, &cs, index).await;
    }
}

/// Leader: before a write missed by some members is acknowledged, every follower in
/// `holders` (they have the write) must have recorded record version `version`, which
/// names the members that missed it: otherwise, after a restart of every chunkserver,
/// one of those members could lead and copy its older chunks over the write. Only
/// followers that have not acknowledged that version yet are sent a heartbeat, so this
/// costs one round trip per change of the set, not per write. `false`: one did not.
pub(crate) async fn share_lagging(
    node: &Node,
    cs: &CopysetState,
    holders: &[usize],
    version: u64,
) -> bool {
    let beats = holders
        .iter()
        .filter(|&&i| !cs.lagging_known_by(i, version))
        .map(|&i| beat(node, cs, i));
    join_all(beats).await;
    holders.iter().all(|&i| cs.lagging_known_by(i, version))
}

async fn copy_dirty_chunks(node: &Node, cs: &CopysetState, index: usize) -> Result<(), ()> {
    let Some(peer) = cs.members().get(index) else {
        return Err(());
    };
    let listing = match cs.election().followers.get(index).map(|f| &f.dirty) {
        Some(Dirty::All) => Some(None),
        Some(Dirty::Since(t)) => Some(Some(*t)),
        _ => None,
    };
    if let Some(since) = listing {
        let ids = node
            .store()
            .chunk_ids(cs.logical_pool_id, cs.copyset_id, since)
            .map_err(|_| ())?;
        let mut election = cs.election();
        if let Some(f) = election.followers.get_mut(index) {
            // Writes since leading were sent to the follower or marked (as no-ops on
            // `All`); the listing covers every chunk that existed before.
            f.dirty = Dirty::Chunks(ids.into_iter().collect());
        }
    }
    loop {
        if !cs.is_leader() {
            return Err(());
        }
        let chunk_id = {
            let election = cs.election();
            let Some(Dirty::Chunks(set)) = election.followers.get(index).map(|f| &f.dirty) else {
                return Err(());
            };
            let Some(&chunk_id) = set.iter().next() else {
                return Ok(());
            };
            chunk_id
        };
        let block = cs.block_chunk(chunk_id);
        let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
        while cs.writes_in_flight(chunk_id) {
            if Instant::now() > drain_deadline {
                return Err(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::timeout(
            CHUNK_COPY_TIMEOUT,
            copy_chunk(node, cs, &peer.addr, chunk_id),
        )
        .await
        .map_err(|_| ())??;
        if let Some(f) = cs.election().followers.get_mut(index)
            && let Dirty::Chunks(set) = &mut f.dirty
        {
            set.remove(&chunk_id);
        }
        drop(block);
    }
}

/// Copies one chunk to the follower at `addr`: first what the chunk is (its sn, and
/// whether it is a clone chunk with which location and written pages), then its data as
/// it is on disk, which leaves the follower's page bitmap alone. A clone chunk never
/// written has no data to send but must still exist on the follower.
async fn copy_chunk(node: &Node, cs: &CopysetState, addr: &str, chunk_id: u64) -> Result<(), ()> {
    let key = ChunkKey {
        logical_pool_id: cs.logical_pool_id,
        copyset_id: cs.copyset_id,
        chunk_id,
    };
    let store = node.store();
    let Some(len) = store.chunk_len(key).map_err(|_| ())? else {
        return Ok(());
    };
    let sn = store.sn(key).map_err(|_| ())?;
    let fields = match store.view(key).map_err(|_| ())? {
        ChunkView::Missing => return Ok(()),
        ChunkView::Plain => CloneFields {
            kind: ReplicateKind::CloneState,
            ..CloneFields::default()
        },
        ChunkView::Clone(meta) => CloneFields {
            kind: ReplicateKind::CloneState,
            location: Some(meta.location),
            corrected_sn: Some(meta.corrected_sn),
            bitmap: Some(meta.bitmap.as_bytes().to_vec()),
        },
    };
    let request = |offset: u32, data: Bytes, fields: &CloneFields| {
        let mut request = ReplicateWriteRequest {
            logic_pool_id: key.logical_pool_id,
            copyset_id: key.copyset_id,
            chunk_id,
            offset,
            data,
            sn,
            leader_id: node.id,
            term: Some(cs.term()),
            // Only heartbeats carry the lagging record.
            ..Default::default()
        };
        fields.fill(&mut request);
        request
    };
    if send_replicate(
        node.channels(),
        addr,
        request(0, Bytes::new(), &fields),
        REPLICATE_DEADLINE,
    )
    .await
        != ReplicaOutcome::Applied
    {
        return Err(());
    }
    let raw = CloneFields {
        kind: ReplicateKind::Raw,
        ..CloneFields::default()
    };
    let mut offset = 0u64;
    while offset < len {
        let piece = CATCH_UP_PIECE.min(len - offset);
        let (Ok(piece_len), Ok(wire_offset)) = (usize::try_from(piece), u32::try_from(offset))
        else {
            return Err(());
        };
        let reader = store.clone();
        let data = tokio::task::spawn_blocking(move || reader.read(key, offset, piece_len))
            .await
            .map_err(|_| ())?
            .map_err(|_| ())?
            .ok_or(())?;
        if send_replicate(
            node.channels(),
            addr,
            request(wire_offset, Bytes::from(data), &raw),
            REPLICATE_DEADLINE,
        )
        .await
            != ReplicaOutcome::Applied
        {
            return Err(());
        }
        offset += piece;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [u32; 3] = [10, 11, 12];

    fn state(term: u64, version: u64, lacking: &[u32]) -> Option<PeerState> {
        Some(PeerState {
            term,
            lagging: Lagging {
                term,
                version,
                ids: lacking.iter().copied().collect(),
            },
        })
    }

    fn choose_as(
        me: usize,
        states: &[Option<PeerState>],
        gone: Option<usize>,
        rounds: &mut [u32],
    ) -> Choice {
        choose(me, &IDS, states, gone, rounds)
    }

    #[test]
    fn a_follower_that_missed_the_last_write_does_not_lead_after_the_leader_dies() {
        // Leader 0 acknowledged a write without member 1 (first in line after it),
        // having made member 2, which has the write, record so (version 2). Member 1
        // never heard: its own record is still version 1, empty.
        let states = [None, state(3, 1, &[]), state(3, 2, &[11])];
        assert_eq!(
            choose_as(1, &states, Some(0), &mut [0; 3]),
            Choice::Follow(2)
        );
        assert_eq!(
            choose_as(2, &states, Some(0), &mut [0; 3]),
            Choice::Lead(BTreeSet::from([11]))
        );
    }

    #[test]
    fn no_majority_no_leader() {
        let alone = [None, state(3, 1, &[]), None];
        assert_eq!(choose_as(1, &alone, Some(0), &mut [9; 3]), Choice::Wait);
        // Both survivors lack writes that only the dead leader holds: nobody is safe.
        let both = [None, state(3, 4, &[11, 12]), state(3, 4, &[11, 12])];
        assert_eq!(choose_as(1, &both, Some(0), &mut [9; 3]), Choice::Wait);
        assert_eq!(choose_as(2, &both, Some(0), &mut [9; 3]), Choice::Wait);
    }

    #[test]
    fn the_newest_record_wins_and_then_order() {
        // Member 2's record of an older term named member 1; member 1's newer one
        // (it was caught up since) names nobody: the first in order leads.
        let states = [None, state(5, 1, &[]), state(4, 7, &[11])];
        assert_eq!(
            choose_as(1, &states, Some(0), &mut [0; 3]),
            Choice::Lead(BTreeSet::new())
        );
        assert_eq!(
            choose_as(2, &states, Some(0), &mut [0; 3]),
            Choice::Follow(1)
        );
    }

    #[test]
    fn the_highest_term_among_complete_members_leads() {
        // Member 1 holds every write but saw only term 2; member 2 followed the last
        // leader, in term 3: member 2 leads although later in order.
        let states = [None, state(2, 1, &[]), state(3, 1, &[])];
        assert_eq!(
            choose_as(1, &states, Some(0), &mut [0; 3]),
            Choice::Follow(2)
        );
    }

    #[test]
    fn an_earlier_silent_member_is_waited_for_unless_it_is_the_dead_leader() {
        let states = [None, state(3, 1, &[]), state(3, 1, &[])];
        let mut rounds = [0; 3];
        // At start nobody is known dead: member 0 may be starting with a newer record.
        for _ in 1..PROBE_FAILURES_TO_FAILOVER {
            assert_eq!(choose_as(1, &states, None, &mut rounds), Choice::Wait);
        }
        assert_eq!(
            choose_as(1, &states, None, &mut rounds),
            Choice::Lead(BTreeSet::new())
        );
        // The leader that stopped answering is passed over at once.
        assert_eq!(
            choose_as(1, &states, Some(0), &mut [0; 3]),
            Choice::Lead(BTreeSet::new())
        );
    }
}
