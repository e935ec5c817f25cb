//! One hosted copyset's replicas, who leads it, and — on the leader — which followers
//! hold every acknowledged write. Leadership is decided here (driven by
//! `election.rs`); the services only ask `leader()`/`is_leader()`.
//!
//! The rules, a much simplified stand-in for braft (no log; whole chunks are copied):
//! - `members[0]` is the preferred leader. A follower probes the leader it follows every
//!   ~500 ms (a `GetLeader` call, skipped when a heartbeat just arrived); after 3 failed
//!   probes (or 3 answers that it leads no more) it follows whoever leads already, or
//!   else the first member in order that may lead by the rule below.
//! - Each leadership has a term (persisted); a leader that hears of a newer one steps
//!   down, so a leader that was stopped (SIGSTOP) and resumes cannot keep writing.
//! - A new leader knows nothing of its followers: it copies them every chunk (catch-up)
//!   before calling them in sync, or only the chunks written in the last ~12 s to a
//!   follower that says it held every write 10 s ago.
//! - Writes a follower misses (dead, hung) mark their chunk dirty for that follower;
//!   the leader copies dirty chunks over once it answers again, holding back writes to
//!   the chunk being copied (for the few ms a copy takes).
//! - A member earlier in order than the leader asks for leadership back with every probe
//!   (`GetLeader` with `peer` set to itself); the leader hands it over once that member
//!   has caught up and acknowledged an in-sync heartbeat of the current term. A leader
//!   that got leadership through `TransferLeader` (an operator's choice) keeps it.
//! - `TransferLeader` asks the leader to hand over to a named member; it does so the
//!   same way, once that member is caught up (within `TRANSFER_TIMEOUT`, else gives up).
//! - A leader serves reads only while a majority answered it within 1.5 s (a lease).
//!
//! - A follower applies replicated writes only from the leader it follows; a deposed
//!   leader's (an older term) are refused as BACKWARD and it steps down.
//! - Every member records which members lack acknowledged writes (`Lagging`, persisted
//!   in the copyset's `lagging` file, so it survives a restart of every chunkserver).
//!   The leader adds a member when a write is acknowledged without it, and before
//!   acknowledging makes sure every follower that has the write records it too (one
//!   extra heartbeat per change of the set, not per write); it removes the member once
//!   caught up. Heartbeats carry the record; `(term, version)` orders records.
//!   A member in the record never leads (so never serves reads or copies its chunks to
//!   others). Before claiming leadership — at start, and when its leader stops
//!   answering — a chunkserver asks its peers for their term and record
//!   (`ReplicaState`), and leads only with a majority answering, not in the newest
//!   record, and with no candidate of a higher term before it (`election::choose`).
//!
//! Why that loses no acknowledged write: a write acknowledged without member M was
//! first recorded as "M lacks writes" by every follower that has it, and those
//! followers and the leader are a majority. Any majority a candidate hears from
//! therefore includes one of them, whose record is at least that new, so M cannot win
//! until a leader has caught it up and said so in a newer record. A follower's own view
//! (it was heartbeated as in sync until the leader vanished) is not enough: the write it
//! missed may have been acknowledged in the last moments before the leader died.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::store::{Durability, read_sn, replace_file, write_sn};
use crate::{HostedCopyset, PeerEntry};

const NO_LEADER: usize = usize::MAX;
/// Probes that must fail in a row before a leader is given up.
pub(crate) const PROBE_FAILURES_TO_FAILOVER: u32 = 3;
/// How long a leader keeps trying to hand over to a `TransferLeader` transferee that
/// is not caught up yet (braft gives up after an election timeout, too).
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// A follower that held every write this recently (by its last in-sync heartbeat)
/// says so when a new leader first heartbeats it; the new leader then copies only the
/// chunks written since, instead of the whole copyset.
pub(crate) const RECENTLY_IN_SYNC: Duration = Duration::from_secs(10);
/// How long a majority's last answer keeps a leader serving reads: three heartbeat
/// rounds, less than the ~1.5 s + a round after which followers elect another leader.
const LEADER_LEASE: Duration = Duration::from_millis(1500);
/// Margin for writes in flight around that last heartbeat (one write deadline, twice).
const IN_FLIGHT_MARGIN: Duration = Duration::from_secs(2);

/// Which members lack acknowledged writes (chunkserver ids), as this chunkserver last
/// learnt it. `(term, version)` orders records: a leader starts a new term at version 1
/// and bumps the version with every change, so a follower never replaces a record with
/// an older one arriving late.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lagging {
    pub term: u64,
    pub version: u64,
    pub ids: BTreeSet<u32>,
}

impl Lagging {
    pub fn key(&self) -> (u64, u64) {
        (self.term, self.version)
    }

    /// "term version id id ..." on one line; `None` if malformed.
    fn decode(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace().map(str::parse::<u64>);
        let term = words.next()?.ok()?;
        let version = words.next()?.ok()?;
        let ids = words
            .map(|w| w.ok().and_then(|id| u32::try_from(id).ok()))
            .collect::<Option<BTreeSet<u32>>>()?;
        Some(Lagging { term, version, ids })
    }

    fn encode(&self) -> String {
        let mut text = format!("{} {}", self.term, self.version);
        for id in &self.ids {
            text.push_str(&format!(" {id}"));
        }
        text.push('\n');
        text
    }
}

/// Which chunks a follower may lack.
#[derive(Debug, Clone)]
pub(crate) enum Dirty {
    /// Unknown: copy every chunk of the copyset.
    All,
    /// Every chunk modified here since this time.
    Since(SystemTime),
    Chunks(HashSet<u64>),
}

/// The leader's view of one follower.
#[derive(Debug)]
pub(crate) struct FollowerSync {
    pub in_sync: bool,
    /// It accepted a heartbeat saying so in this term, hence knows this term and its
    /// next leadership will take a higher one (required before handing leadership back).
    pub in_sync_acked: bool,
    pub dirty: Dirty,
    pub catching_up: bool,
    /// The newest version of this term's `Lagging` record it acknowledged.
    pub lagging_acked: u64,
}

impl FollowerSync {
    fn unknown() -> Self {
        FollowerSync {
            in_sync: false,
            in_sync_acked: false,
            dirty: Dirty::All,
            catching_up: false,
            lagging_acked: 0,
        }
    }

    /// The follower answered our first heartbeat saying it was in sync recently.
    pub fn recently_in_sync(&mut self) {
        if matches!(self.dirty, Dirty::All) {
            let since = SystemTime::now()
                .checked_sub(RECENTLY_IN_SYNC + IN_FLIGHT_MARGIN)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            self.dirty = Dirty::Since(since);
        }
    }

    /// It holds every acknowledged write and knows it: it may take leadership over.
    fn ready_to_lead(&self) -> bool {
        self.in_sync && self.in_sync_acked
    }

    fn mark_dirty(&mut self, chunk_id: u64) {
        self.in_sync = false;
        self.in_sync_acked = false;
        if let Dirty::Chunks(set) = &mut self.dirty {
            set.insert(chunk_id);
        }
    }
}

/// Election and sync state; behind one lock because it changes a few times a second.
#[derive(Debug)]
pub(crate) struct Election {
    /// Consecutive failed probes per member index.
    pub probe_failures: Vec<u32>,
    /// Last in-sync heartbeat received (or, for a former leader, the last time it had
    /// a majority behind it).
    pub last_heartbeat: Option<Instant>,
    /// Leader only: the last heartbeat round a majority answered.
    pub last_led: Option<Instant>,
    pub last_leader_contact: Option<Instant>,
    /// Leader only: per member index (this chunkserver's own entry unused).
    pub followers: Vec<FollowerSync>,
    /// Leader only: byte ranges `[start, end)` of the writes in flight per chunk. A
    /// catch-up copy waits them out, and a write waits for those it overlaps, so that
    /// every replica applies overlapping writes in the same order.
    pub writes_in_flight: HashMap<u64, Vec<(u64, u64)>>,
    /// Leader only: chunks being copied to a follower; their writes wait, or the copy
    /// could land after (and undo) a newer write on the follower.
    pub copy_blocked: HashSet<u64>,
    /// Which members lack acknowledged writes (persisted in `lagging_path`).
    pub lagging: Lagging,
    /// Leader only: a `TransferLeader` in progress, to this member index, until then.
    pub transfer_to: Option<(usize, Instant)>,
    /// Leader only: whether earlier members get leadership back when they ask (not
    /// after a transfer, which an operator asked for).
    pub hands_back: bool,
}

#[derive(Debug)]
pub(crate) struct CopysetState {
    pub logical_pool_id: u32,
    pub copyset_id: u32,
    members: Vec<PeerEntry>,
    /// This chunkserver's position in `members`.
    self_index: usize,
    /// Index of the leader in `members`, or `NO_LEADER` while unknown (startup).
    leader: AtomicUsize,
    /// Writes applied here, leader or follower; reported as `appliedIndex`.
    applied_index: AtomicU64,
    /// The highest leadership term seen; each new leader takes the next one, so a
    /// deposed leader that wakes up (SIGSTOP, partition) learns it is out of date.
    term: AtomicU64,
    /// Where `term` is kept across restarts (a restarted leader must not reuse a term).
    term_path: PathBuf,
    /// Where `Election::lagging` is kept across restarts (beside `term_path`).
    lagging_path: PathBuf,
    /// How `term` and `lagging` are written (a record lost to a power cut could let a
    /// member that lacks writes lead).
    durability: Durability,
    election: Mutex<Election>,
    /// Wakes writes waiting for a chunk copy or an overlapping write to finish.
    unblocked: tokio::sync::Notify,
}

/// Holds a chunk's writes back while it is copied to a follower; released on drop, so
/// an aborted or failed copy never leaves writes waiting.
pub(crate) struct CopyBlock<'a> {
    copyset: &'a CopysetState,
    chunk_id: u64,
}

impl Drop for CopyBlock<'_> {
    fn drop(&mut self) {
        self.copyset.election().copy_blocked.remove(&self.chunk_id);
        self.copyset.unblocked.notify_waiters();
    }
}

/// A leader's write between `begin_write` and `finish`. Dropped unfinished (the
/// client went away and tonic dropped the handler), it still leaves the in-flight count
/// and marks the chunk dirty on every follower, since nobody knows who got it.
pub(crate) struct WriteInFlight<'a> {
    copyset: &'a CopysetState,
    chunk_id: u64,
    range: (u64, u64),
    done: bool,
}

impl WriteInFlight<'_> {
    /// `missed`: member indexes that do not have the write.
    pub fn finish(mut self, missed: &[usize]) {
        self.done = true;
        self.copyset
            .end_write(self.chunk_id, self.range, Some(missed));
    }
}

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.copyset.end_write(self.chunk_id, self.range, None);
        }
    }
}

/// What this chunkserver currently is for the copyset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Leader,
    Follower(usize),
    Unknown,
}

impl CopysetState {
    /// `None` when this chunkserver is not among the copyset's members. `term_path` is
    /// a file in the copyset's folder.
    pub fn new(
        hosted: &HostedCopyset,
        self_id: u32,
        term_path: PathBuf,
        durability: Durability,
    ) -> Option<Self> {
        let self_index = hosted.members.iter().position(|m| m.id == self_id)?;
        let n = hosted.members.len();
        // An unreadable term file counts as term 0: the peers' heartbeats teach us theirs.
        let term = read_sn(&term_path).unwrap_or(0);
        let lagging_path = term_path.with_file_name("lagging");
        // A missing record means nobody was ever left behind; an unreadable one is
        // treated alike and the newer records of the peers win at start anyway.
        let lagging = std::fs::read_to_string(&lagging_path)
            .ok()
            .and_then(|text| Lagging::decode(&text))
            .unwrap_or_default();
        Some(CopysetState {
            lagging_path,
            durability,
            term: AtomicU64::new(term),
            term_path,
            logical_pool_id: hosted.logical_pool_id,
            copyset_id: hosted.copyset_id,
            members: hosted.members.clone(),
            self_index,
            leader: AtomicUsize::new(NO_LEADER),
            applied_index: AtomicU64::new(0),
            election: Mutex::new(Election {
                probe_failures: vec![0; n],
                last_heartbeat: None,
                last_led: None,
                last_leader_contact: None,
                followers: (0..n).map(|_| FollowerSync::unknown()).collect(),
                writes_in_flight: HashMap::new(),
                copy_blocked: HashSet::new(),
                lagging,
                transfer_to: None,
                hands_back: true,
            }),
            unblocked: tokio::sync::Notify::new(),
        })
    }

    pub fn election(&self) -> MutexGuard<'_, Election> {
        self.election.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn members(&self) -> &[PeerEntry] {
        &self.members
    }

    pub fn self_index(&self) -> usize {
        self.self_index
    }

    pub fn member_index(&self, id: u32) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The member whose PeerId text or "ip:port" is `address`.
    pub fn member_by_address(&self, address: &str) -> Option<usize> {
        let addr = address.strip_suffix(":0").unwrap_or(address);
        self.members.iter().position(|m| m.addr == addr)
    }

    pub fn role(&self) -> Role {
        match self.leader.load(Ordering::Acquire) {
            NO_LEADER => Role::Unknown,
            i if i == self.self_index => Role::Leader,
            i => Role::Follower(i),
        }
    }

    /// The leader this chunkserver knows of, if any.
    pub fn leader(&self) -> Option<&PeerEntry> {
        self.members.get(self.leader.load(Ordering::Acquire))
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire) == self.self_index
    }

    /// Follow member `index` (not this chunkserver).
    pub fn follow(&self, index: usize) {
        if index == self.self_index || index >= self.members.len() {
            return;
        }
        let previous = self.leader.swap(index, Ordering::AcqRel);
        if previous == self.self_index {
            self.note_former_leadership();
        }
        if previous != index {
            tracing::info!(
                copyset = %self.name(),
                leader = self.members[index].id,
                "following a new leader"
            );
            self.election().probe_failures[index] = 0;
        }
    }

    /// Take leadership in a new term. Every follower starts unknown and gets a full
    /// catch-up copy. The lagging record carries over (from `newest`, the newest one
    /// the peers had at start, when given) under the new term.
    pub fn lead(&self) {
        self.lead_with(None, true);
    }

    /// `hands_back`: false when leadership came through `TransferLeader`.
    pub fn lead_with(&self, newest: Option<BTreeSet<u32>>, hands_back: bool) {
        let mut election = self.election();
        for f in &mut election.followers {
            *f = FollowerSync::unknown();
        }
        election.transfer_to = None;
        election.hands_back = hands_back;
        let term = self.term.fetch_add(1, Ordering::AcqRel) + 1;
        self.persist_term(term);
        if let Some(ids) = newest {
            election.lagging.ids = ids;
        }
        election.lagging.term = term;
        election.lagging.version = 1;
        self.persist_lagging(&election.lagging);
        self.leader.store(self.self_index, Ordering::Release);
        tracing::info!(copyset = %self.name(), term, lagging = ?election.lagging.ids, "leading");
    }

    fn persist_lagging(&self, lagging: &Lagging) {
        let written = replace_file(
            &self.lagging_path,
            lagging.encode().as_bytes(),
            self.durability,
        );
        if let Err(e) = written {
            tracing::warn!(copyset = %self.name(), error = %e, "cannot persist lagging members");
        }
    }

    pub fn lagging(&self) -> Lagging {
        self.election().lagging.clone()
    }

    /// Whether this chunkserver's own record says it lacks acknowledged writes.
    pub fn self_lagging(&self) -> bool {
        let me = self.members[self.self_index].id;
        self.election().lagging.ids.contains(&me)
    }

    /// Leader: the members at `missed` lack a write; returns the record version that
    /// the followers holding the write must acknowledge before it is acknowledged.
    /// Persists only when the set changes.
    pub fn note_missed(&self, missed: &[usize]) -> u64 {
        let mut election = self.election();
        let mut changed = false;
        for &i in missed {
            if let Some(m) = self.members.get(i) {
                changed |= election.lagging.ids.insert(m.id);
            }
        }
        if changed {
            election.lagging.version += 1;
            self.persist_lagging(&election.lagging);
            tracing::info!(copyset = %self.name(), lagging = ?election.lagging.ids, "members lack writes");
        }
        election.lagging.version
    }

    /// Leader: member `index` holds every acknowledged write again.
    pub fn clear_lagging(&self, election: &mut Election, index: usize) {
        if let Some(m) = self.members.get(index)
            && election.lagging.ids.remove(&m.id)
        {
            election.lagging.version += 1;
            self.persist_lagging(&election.lagging);
        }
    }

    /// Leader: whether follower `index` acknowledged record version `version`.
    pub fn lagging_known_by(&self, index: usize, version: u64) -> bool {
        self.election()
            .followers
            .get(index)
            .is_some_and(|f| f.lagging_acked >= version)
    }

    /// Follower: a record from the leader. `false` if it is from an older term than
    /// the one held (the sender's view is out of date); a late older version of the
    /// same term is ignored (the newer one already covers it) but accepted.
    pub fn adopt_lagging(&self, incoming: Lagging) -> bool {
        let mut election = self.election();
        if incoming.term < election.lagging.term {
            return false;
        }
        if incoming.key() > election.lagging.key() {
            if incoming.ids != election.lagging.ids || incoming.term != election.lagging.term {
                self.persist_lagging(&incoming);
            }
            election.lagging = incoming;
        }
        true
    }

    /// Forget the leader (a newer term exists somewhere); discovery finds it again.
    pub fn step_down(&self) {
        if self.leader.swap(NO_LEADER, Ordering::AcqRel) == self.self_index {
            self.note_former_leadership();
        }
        tracing::info!(copyset = %self.name(), "stepped down");
    }

    /// A leader held every write up to its last majority-confirmed heartbeat round;
    /// not beyond, since it may have been stopped (SIGSTOP) while others wrote.
    fn note_former_leadership(&self) {
        let mut election = self.election();
        election.last_heartbeat = election.last_heartbeat.max(election.last_led);
    }

    /// Leader: a majority just confirmed us (a heartbeat round or a committed write).
    pub fn note_majority(&self) {
        self.election().last_led = Some(Instant::now());
    }

    /// Leader: whether reads may be served locally. A leader that has not heard from a
    /// majority for a while may have been replaced (it was stopped or cut off) and its
    /// data may be stale; like braft's leader lease, it stops serving reads until it
    /// hears from a majority again or learns of the new leader.
    pub fn lease_valid(&self) -> bool {
        self.election()
            .last_led
            .is_some_and(|t| t.elapsed() < LEADER_LEASE)
    }

    /// Whether this chunkserver held every write within [`RECENTLY_IN_SYNC`].
    pub fn recently_in_sync(&self) -> bool {
        self.election()
            .last_heartbeat
            .is_some_and(|t| t.elapsed() < RECENTLY_IN_SYNC)
    }

    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    /// Records a term announced by a leader. `false`: it is older than one already seen.
    /// Raises our term to `term` if it is newer; says how `term` compares with the
    /// term we held until now.
    pub fn observe_term(&self, term: u64) -> std::cmp::Ordering {
        let previous = self.term.fetch_max(term, Ordering::AcqRel);
        if term > previous {
            self.persist_term(term);
        }
        term.cmp(&previous)
    }

    fn persist_term(&self, term: u64) {
        if let Err(e) = write_sn(&self.term_path, term, self.durability) {
            tracing::warn!(copyset = %self.name(), error = %e, "cannot persist term");
        }
    }

    /// Leader: start handing leadership to member `index` once it is caught up.
    pub fn start_transfer(&self, index: usize) {
        self.election().transfer_to = Some((index, Instant::now() + TRANSFER_TIMEOUT));
        tracing::info!(copyset = %self.name(), to = index, "transferring leadership");
    }

    /// Leader: the member to hand leadership to now, if a transfer is due and its
    /// transferee is ready; clears a transfer that timed out.
    pub fn transfer_due(&self) -> Option<usize> {
        let mut election = self.election();
        let (to, until) = election.transfer_to?;
        if Instant::now() > until {
            election.transfer_to = None;
            tracing::warn!(copyset = %self.name(), to, "leader transfer timed out");
            return None;
        }
        let ready = election
            .followers
            .get(to)
            .is_some_and(FollowerSync::ready_to_lead);
        ready.then(|| {
            election.transfer_to = None;
            to
        })
    }

    /// Leader: whether an earlier member asking for leadership gets it back.
    pub fn hands_back(&self) -> bool {
        self.election().hands_back
    }

    /// Every member except this chunkserver, with its index.
    pub fn peers(&self) -> impl Iterator<Item = (usize, &PeerEntry)> {
        let me = self.self_index;
        self.members
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != me)
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

    /// Leader: a write of `len` bytes at `offset` of `chunk_id` is about to be applied
    /// and replicated; waits while the chunk is being copied to a follower, and while a
    /// write it overlaps is in flight. The leader applies a write locally while sending
    /// it to the followers, so two overlapping writes let through together could land
    /// in one order here and the other on a follower: replicas would differ for good.
    pub async fn begin_write(&self, chunk_id: u64, offset: u64, len: u64) -> WriteInFlight<'_> {
        let range = (offset, offset.saturating_add(len));
        // An empty write touches no byte, so it overlaps nothing.
        let overlaps =
            |&(start, end): &(u64, u64)| range.0 < range.1 && start < range.1 && range.0 < end;
        loop {
            let unblocked = self.unblocked.notified();
            tokio::pin!(unblocked);
            // Registered before the check, so a release between the two is not missed.
            unblocked.as_mut().enable();
            {
                let mut election = self.election();
                let held_back = election.copy_blocked.contains(&chunk_id)
                    || election
                        .writes_in_flight
                        .get(&chunk_id)
                        .is_some_and(|ranges| ranges.iter().any(overlaps));
                if !held_back {
                    election
                        .writes_in_flight
                        .entry(chunk_id)
                        .or_default()
                        .push(range);
                    return WriteInFlight {
                        copyset: self,
                        chunk_id,
                        range,
                        done: false,
                    };
                }
            }
            unblocked.await;
        }
    }

    /// Leader: holds back new writes to `chunk_id` until the returned block is dropped.
    pub fn block_chunk(&self, chunk_id: u64) -> CopyBlock<'_> {
        self.election().copy_blocked.insert(chunk_id);
        CopyBlock {
            copyset: self,
            chunk_id,
        }
    }

    pub fn writes_in_flight(&self, chunk_id: u64) -> bool {
        self.election().writes_in_flight.contains_key(&chunk_id)
    }

    fn end_write(&self, chunk_id: u64, range: (u64, u64), missed: Option<&[usize]>) {
        let mut election = self.election();
        if let Some(ranges) = election.writes_in_flight.get_mut(&chunk_id) {
            if let Some(i) = ranges.iter().position(|r| *r == range) {
                ranges.swap_remove(i);
            }
            if ranges.is_empty() {
                election.writes_in_flight.remove(&chunk_id);
            }
        }
        let me = self.self_index;
        for (i, f) in election.followers.iter_mut().enumerate() {
            // An abandoned write may or may not have reached anyone.
            if i != me && missed.is_none_or(|m| m.contains(&i)) {
                f.mark_dirty(chunk_id);
            }
        }
        drop(election);
        // Wakes the writes this one held back.
        self.unblocked.notify_waiters();
    }

    /// Leader: whether member `index` holds every acknowledged write and knows it.
    pub fn follower_ready_to_lead(&self, index: usize) -> bool {
        self.election()
            .followers
            .get(index)
            .is_some_and(FollowerSync::ready_to_lead)
    }

    /// "pool-copyset", for logs.
    pub fn name(&self) -> String {
        format!("{}-{}", self.logical_pool_id, self.copyset_id)
    }
}

/// braft's PeerId text for a replica, as Curve's `Peer.address` and `redirect` carry it.
pub(crate) fn peer_id_text(peer: &PeerEntry) -> String {
    format!("{}:0", peer.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copyset(dir: &std::path::Path) -> Option<CopysetState> {
        let members = (0..3)
            .map(|id| PeerEntry {
                id,
                addr: format!("127.0.0.1:{}", 9000 + id),
            })
            .collect();
        let hosted = HostedCopyset {
            logical_pool_id: 1,
            copyset_id: 1,
            members,
        };
        CopysetState::new(&hosted, 0, dir.join("term"), Durability::Cache)
    }

    #[tokio::test]
    async fn writes_wait_for_a_chunk_copy_and_abandoned_writes_mark_dirty() {
        let dir = tempfile::tempdir().ok();
        let Some(cs) = dir.as_ref().and_then(|d| copyset(d.path())) else {
            panic!("copyset");
        };
        cs.lead();
        for f in &mut cs.election().followers {
            f.dirty = Dirty::Chunks(HashSet::new());
            f.in_sync = true;
        }
        let block = cs.block_chunk(7);
        // Another chunk is not held back.
        cs.begin_write(8, 0, 4096).await.finish(&[]);
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), cs.begin_write(7, 0, 4096)).await;
        assert!(waiting.is_err(), "write went through a copy block");
        drop(block);
        let write = tokio::time::timeout(Duration::from_secs(1), cs.begin_write(7, 0, 4096)).await;
        let Ok(write) = write else {
            panic!("write still held back after the copy");
        };
        assert!(cs.writes_in_flight(7));
        drop(write);
        assert!(!cs.writes_in_flight(7));
        let election = cs.election();
        for i in [1, 2] {
            let f = &election.followers[i];
            assert!(!f.in_sync);
            assert!(matches!(&f.dirty, Dirty::Chunks(set) if set.contains(&7)));
        }
    }

    #[tokio::test]
    async fn overlapping_writes_to_a_chunk_go_one_at_a_time() {
        let dir = tempfile::tempdir().ok();
        let Some(cs) = dir.as_ref().and_then(|d| copyset(d.path())) else {
            panic!("copyset");
        };
        cs.lead();
        let short = Duration::from_millis(50);
        let first = cs.begin_write(7, 4096, 8192).await;
        // Beside it, in another chunk, or empty: not held back.
        for (chunk, offset, len) in [
            (7, 0, 4096),
            (7, 12288, 4096),
            (8, 4096, 8192),
            (7, 8192, 0),
        ] {
            let Ok(write) = tokio::time::timeout(short, cs.begin_write(chunk, offset, len)).await
            else {
                panic!("{chunk}:{offset}+{len} was held back");
            };
            write.finish(&[]);
        }
        for (offset, len) in [(4096, 8192), (0, 8192), (8192, 4096), (0, 1 << 20)] {
            let overlapping = tokio::time::timeout(short, cs.begin_write(7, offset, len)).await;
            assert!(
                overlapping.is_err(),
                "{offset}+{len} overlapped a write in flight"
            );
        }
        let waiter = cs.begin_write(7, 8192, 4096);
        tokio::pin!(waiter);
        assert!(tokio::time::timeout(short, waiter.as_mut()).await.is_err());
        first.finish(&[]);
        let Ok(second) = tokio::time::timeout(Duration::from_secs(1), waiter).await else {
            panic!("overlapping write still held back after the first finished");
        };
        second.finish(&[]);
        assert!(!cs.writes_in_flight(7));
    }

    #[test]
    fn lagging_record_survives_a_restart_and_never_goes_back() {
        let dir = tempfile::tempdir().ok();
        let Some(path) = dir.as_ref().map(|d| d.path().to_path_buf()) else {
            panic!("tempdir");
        };
        let Some(cs) = copyset(&path) else {
            panic!("copyset");
        };
        assert_eq!(cs.lagging(), Lagging::default());
        cs.lead();
        assert_eq!(cs.lagging().key(), (1, 1));
        // Once per change of the set, not per write.
        assert_eq!(cs.note_missed(&[2]), 2);
        assert_eq!(cs.note_missed(&[2]), 2);
        assert_eq!(cs.note_missed(&[1, 2, 7]), 3);
        {
            let mut election = cs.election();
            cs.clear_lagging(&mut election, 1);
        }
        let expected = Lagging {
            term: 1,
            version: 4,
            ids: BTreeSet::from([2]),
        };
        assert_eq!(cs.lagging(), expected);
        drop(cs);
        let Some(cs) = copyset(&path) else {
            panic!("copyset");
        };
        assert_eq!(cs.lagging(), expected);
        // As a follower: a late older version of the same term changes nothing, an
        // older term is refused, a newer record replaces it.
        let record = |term, version, ids: &[u32]| Lagging {
            term,
            version,
            ids: ids.iter().copied().collect(),
        };
        assert!(cs.adopt_lagging(record(1, 2, &[])));
        assert_eq!(cs.lagging(), expected);
        assert!(!cs.adopt_lagging(record(0, 9, &[])));
        assert!(cs.adopt_lagging(record(3, 1, &[0])));
        assert!(cs.self_lagging());
        // Garbage on disk is an empty record, never a panic.
        for text in ["", "x", "1", "1 2 y", "1 2 99999999999"] {
            assert_eq!(Lagging::decode(text), None, "{text:?}");
        }
        assert_eq!(Lagging::decode("3 1 0\n"), Some(record(3, 1, &[0])));
    }

    #[test]
    fn terms_only_grow_and_survive_a_restart() {
        let dir = tempfile::tempdir().ok();
        let Some(path) = dir.as_ref().map(|d| d.path().to_path_buf()) else {
            panic!("tempdir");
        };
        let Some(cs) = copyset(&path) else {
            panic!("copyset");
        };
        assert_eq!(cs.role(), Role::Unknown);
        cs.lead();
        assert!(cs.is_leader());
        assert_eq!(cs.term(), 1);
        assert_eq!(cs.observe_term(5), std::cmp::Ordering::Greater);
        assert_eq!(cs.observe_term(5), std::cmp::Ordering::Equal);
        assert_eq!(cs.observe_term(4), std::cmp::Ordering::Less);
        drop(cs);
        let Some(cs) = copyset(&path) else {
            panic!("copyset");
        };
        assert_eq!(cs.term(), 5);
        cs.lead();
        assert_eq!(cs.term(), 6);
        cs.follow(2);
        assert_eq!(cs.role(), Role::Follower(2));
        assert_eq!(cs.leader().map(|p| p.id), Some(2));
    }
}
