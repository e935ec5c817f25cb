//! Which of several local cluster servers sharing one data folder is the active one: a
//! lease. The local MDSes campaign with it, and so do the snapshot/clone service's
//! instances, each kind in its own data folder.
//!
//! Upstream's MDSes and snapshot/clone servers campaign through etcd: the winner's key
//! lives in a session with a TTL (`mds.leader.sessionInterSec`, 5 s) that it keeps alive,
//! followers keep their port closed, and a server that loses the key exits. The local
//! cluster's servers run on one machine and share one data folder per kind, so the
//! campaign is kept in the folder, in `leader/`:
//!
//! - Leadership comes in terms. `leader/term-<N>` is the record of term N: who holds it (pid
//!   and a per-process id), which store file it serves from (if its kind copies one, see
//!   [`StoreFiles`]), and when its lease ends on the machine's monotonic clock (one clock
//!   for every process here, and one that keeps running while a process is stopped). A
//!   term is claimed by hard-linking a complete record into place, which fails if the name
//!   exists: of two servers claiming term N+1, one wins.
//! - The holder rewrites its record with a later end every quarter lease. A server may
//!   claim the next term once the latest record's lease has ended (a paused or hung
//!   holder), its holder has gone (killed: no need to wait out the lease), or the holder
//!   released it (a clean stop).
//! - Fencing. A holder acts only while its own lease runs, a bound it extends only after
//!   its renewal was written and no later term was found ([`LeaseGate`]). A new holder
//!   waits out the previous record's lease as it stands after the claim (the old holder
//!   may have renewed once more before it saw the new term), so the two never act at once.
//!   The MDS's store is a redb file that the old process keeps open (a paused process
//!   keeps its locks), so a new MDS serves from a copy: `mds-<N>.redb`, copied from the
//!   previous term's file while nobody writes it. Whatever a resumed old holder writes
//!   after that lands in a file nobody reads; it finds the later term at its next renewal
//!   (or its lease ended) and exits, as upstream's servers do when their etcd session is
//!   lost. A kind without a store to copy (the snapshot/clone service, whose records are
//!   files replaced whole) checks the gate before each write instead.
//!
//! Knowingly different from etcd: the lease is measured on one machine's clock, so it is
//! no use across machines, and a claim reads records with plain file reads (a record is
//! replaced by rename, so a reader sees the old one or the new one, never a mix).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why the lease records could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot use the lease folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the lease record {path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("{0}")]
    Other(String),
}

/// The store files of a kind whose store is one file that a new holder copies (the MDS's
/// redb): the first term's name (and that of folders made before terms existed), and
/// later terms' `<prefix><term><suffix>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFiles {
    pub first: &'static str,
    pub prefix: &'static str,
    pub suffix: &'static str,
}

impl StoreFiles {
    fn of_term(&self, term: u64) -> String {
        format!("{}{term}{}", self.prefix, self.suffix)
    }

    /// A store file of any term, or a copy left half-made.
    fn is_store(&self, name: &str) -> bool {
        name == self.first
            || (name.starts_with(self.prefix) && name.ends_with(self.suffix))
            || name.ends_with(&format!("{}.copy", self.suffix))
    }
}

/// Who campaigns, and for what.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The folder the servers of this kind share; the records are in its `leader/`.
    pub data_dir: PathBuf,
    /// The kind, for logs: "MDS", "snapshot/clone service".
    pub role: &'static str,
    /// Which server of its kind (its place in the cluster's layout).
    pub index: usize,
    pub lease: Duration,
    /// The store a new holder copies; `None` for a kind that keeps none.
    pub store: Option<StoreFiles>,
}

/// The folder that holds the term records.
pub fn leader_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("leader")
}

/// Nanoseconds on the machine's monotonic clock (`CLOCK_MONOTONIC`: the same for every
/// process, and it runs on while a process is stopped).
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One term's record, as stored in `leader/term-<N>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct TermRecord {
    term: u64,
    /// Which server of its kind holds it (for logs); `mds` in records of older clusters.
    #[serde(alias = "mds")]
    index: usize,
    pid: u32,
    /// Tells two holders apart when the pids are equal (tests run several in one process).
    holder: String,
    /// The store file, in the data folder, this term serves from ("" for a kind without).
    #[serde(default)]
    store: String,
    /// End of the lease on the monotonic clock; 0 when released.
    expires_ns: u64,
}

/// Whether this server may act (answer a request, write a record, take a task's next
/// step): true while its lease runs.
#[derive(Debug, Default)]
pub struct LeaseGate {
    valid_until_ns: AtomicU64,
}

impl LeaseGate {
    /// True while the lease runs. Checked before a request runs and again before its
    /// answer goes out, so an MDS paused in between does not answer after it was replaced.
    pub fn is_open(&self) -> bool {
        now_ns() < self.valid_until_ns.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.valid_until_ns.store(0, Ordering::Release);
    }

    fn open_until(&self, until_ns: u64) {
        self.valid_until_ns.store(until_ns, Ordering::Release);
    }

    fn until(&self) -> u64 {
        self.valid_until_ns.load(Ordering::Acquire)
    }
}

/// Why a holder stopped holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The term that replaced ours, if one did (else the record could not be renewed).
    pub by_term: Option<u64>,
    /// Which server of the kind holds that term.
    pub by_index: Option<usize>,
    pub why: String,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.by_term, self.by_index) {
            (Some(term), Some(index)) => {
                write!(f, "term {term} went to server {index}: {}", self.why)
            }
            _ => f.write_str(&self.why),
        }
    }
}

/// Leadership of a data folder: one term, renewed by [`Leadership::hold`].
#[derive(Debug)]
pub struct Leadership {
    candidate: Candidate,
    record: TermRecord,
    gate: Arc<LeaseGate>,
}

impl Leadership {
    /// Waits until `candidate` holds a term and returns it, with its store ready (copied
    /// from the previous term's when that was another process's). `on_standby` runs once if
    /// the first try finds another server holding the lease.
    pub async fn campaign(candidate: Candidate, on_standby: impl FnOnce()) -> Result<Self, Error> {
        let holder = uuid::Uuid::new_v4().to_string();
        let mut on_standby = Some(on_standby);
        loop {
            if let Some(held) = Self::try_claim(&candidate, &holder).await? {
                return Ok(held);
            }
            if let Some(f) = on_standby.take() {
                f();
            }
            tokio::time::sleep(poll(candidate.lease)).await;
        }
    }

    /// Claims the next term if the latest one's lease is over; `None` if it is not, or if
    /// another server claimed it first.
    async fn try_claim(candidate: &Candidate, holder: &str) -> Result<Option<Self>, Error> {
        let (data_dir, lease) = (candidate.data_dir.as_path(), candidate.lease);
        let dir = leader_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|source| Error::DataDir {
            path: dir.clone(),
            source,
        })?;
        let previous = latest(&dir)?;
        if let Some(p) = &previous
            && !is_over(p, lease)
        {
            return Ok(None);
        }
        let start = now_ns();
        let mut record = TermRecord {
            term: previous.as_ref().map_or(1, |p| p.term + 1),
            index: candidate.index,
            pid: std::process::id(),
            holder: holder.to_string(),
            store: match (&previous, &candidate.store) {
                (_, None) => String::new(),
                (Some(p), Some(_)) => p.store.clone(),
                (None, Some(files)) => files.first.to_string(),
            },
            expires_ns: start + nanos(lease),
        };
        if !create(&dir, &record)? {
            return Ok(None);
        }
        let gate = Arc::new(LeaseGate::default());
        let mut held = Self {
            candidate: candidate.clone(),
            record: record.clone(),
            gate,
        };
        if let Some(previous) = previous {
            // The previous holder may have renewed once more after we read its record and
            // before it can see our term: wait out its lease as it stands now, renewing
            // ours meanwhile so no third server takes it from us.
            loop {
                let now_record = read(&dir, previous.term)?.unwrap_or(previous.clone());
                if is_over(&now_record, lease) {
                    break;
                }
                held.renew_record()?;
                tokio::time::sleep(poll(lease)).await;
            }
            if let Some(files) = &candidate.store
                && previous.holder != holder
            {
                let fresh = files.of_term(record.term);
                let copied = copy_store(data_dir, &previous.store, &fresh).await?;
                record.store = if copied {
                    fresh
                } else {
                    previous.store.clone()
                };
                held.record.store = record.store.clone();
            }
        }
        held.renew_record()?;
        if let Some(later) = latest(&dir)?
            && later.term > held.record.term
        {
            // Someone waited less than we did: not ours after all.
            held.gate.close();
            return Ok(None);
        }
        held.gate.open_until(held.record.expires_ns);
        held.forget_old_terms();
        tracing::info!(
            "{} {} holds term {} (lease {} ms{})",
            candidate.role,
            candidate.index,
            held.record.term,
            lease.as_millis(),
            if candidate.store.is_some() {
                format!(", store {}", held.record.store)
            } else {
                String::new()
            }
        );
        Ok(Some(held))
    }

    /// The term held.
    pub fn term(&self) -> u64 {
        self.record.term
    }

    /// The store file this term serves from, for a kind with [`StoreFiles`].
    pub fn store_path(&self) -> Option<PathBuf> {
        self.candidate
            .store
            .map(|_| self.candidate.data_dir.join(&self.record.store))
    }

    /// The gate the server checks before it acts.
    pub fn gate(&self) -> Arc<LeaseGate> {
        Arc::clone(&self.gate)
    }

    /// Renews the lease every quarter lease until it is lost; returns why. A holder whose
    /// lease ran out unseen (the process was stopped) claims the next term for itself if
    /// no other server did, and is lost if one did.
    pub async fn hold(&mut self) -> Lost {
        loop {
            tokio::time::sleep(self.candidate.lease / 4).await;
            if let Err(lost) = self.renew().await {
                self.gate.close();
                return lost;
            }
        }
    }

    async fn renew(&mut self) -> Result<(), Lost> {
        let dir = leader_dir(&self.candidate.data_dir);
        let unreadable = |e: Error| Lost {
            by_term: None,
            by_index: None,
            why: format!("cannot read the lease records: {e}"),
        };
        let lapsed = now_ns() >= self.gate.until();
        if lapsed {
            // Stopped past the end of the lease: answer nothing until the lease is ours again.
            self.gate.close();
        }
        if let Some(later) = latest(&dir).map_err(unreadable)?
            && later.term > self.record.term
        {
            return Err(superseded(&later));
        }
        if lapsed {
            let mut next = self.record.clone();
            next.term += 1;
            next.expires_ns = now_ns() + nanos(self.candidate.lease);
            if !create(&dir, &next).map_err(unreadable)? {
                let later = latest(&dir).map_err(unreadable)?;
                return Err(later.map_or_else(
                    || Lost {
                        by_term: None,
                        by_index: None,
                        why: "the lease lapsed".into(),
                    },
                    |l| superseded(&l),
                ));
            }
            tracing::warn!(
                "{} {} was stopped past its lease; it holds term {} again",
                self.candidate.role,
                self.record.index,
                next.term
            );
            self.record = next;
        }
        self.renew_record().map_err(|e| Lost {
            by_term: None,
            by_index: None,
            why: format!("cannot renew the lease: {e}"),
        })?;
        if let Some(later) = latest(&dir).map_err(unreadable)?
            && later.term > self.record.term
        {
            return Err(superseded(&later));
        }
        self.gate.open_until(self.record.expires_ns);
        Ok(())
    }

    /// Rewrites this term's record with a lease from now.
    fn renew_record(&mut self) -> Result<(), Error> {
        self.record.expires_ns = now_ns() + nanos(self.candidate.lease);
        replace(&leader_dir(&self.candidate.data_dir), &self.record)
    }

    /// Gives the lease up at once (a clean stop), so a standby need not wait it out. Call
    /// once nothing is served any more and the store is closed.
    pub fn release(mut self) {
        self.gate.close();
        let dir = leader_dir(&self.candidate.data_dir);
        if matches!(latest(&dir), Ok(Some(l)) if l.term == self.record.term) {
            self.record.expires_ns = 0;
            if let Err(e) = replace(&dir, &self.record) {
                tracing::warn!("cannot release the {} lease: {e}", self.candidate.role);
            }
        }
    }

    /// Removes the records before the previous term and store files no term uses.
    fn forget_old_terms(&self) {
        let dir = leader_dir(&self.candidate.data_dir);
        for (term, path) in terms(&dir).unwrap_or_default() {
            if term + 1 < self.record.term {
                let _ = std::fs::remove_file(path);
            }
        }
        let Some(files) = self.candidate.store else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&self.candidate.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if files.is_store(&name) && name != self.record.store {
                // A previous holder still running keeps its open file; only the name goes.
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn superseded(later: &TermRecord) -> Lost {
    Lost {
        by_term: Some(later.term),
        by_index: Some(later.index),
        why: "another server claimed the lease after it ran out".into(),
    }
}

/// How often a standby looks at the lease.
fn poll(lease: Duration) -> Duration {
    (lease / 20).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Whether a term's lease is over: released, its holder gone, or its end passed by more
/// than a margin (the margin covers the time between a holder's clock read and its write).
fn is_over(record: &TermRecord, lease: Duration) -> bool {
    record.expires_ns == 0
        || holder_gone(record.pid)
        || now_ns() > record.expires_ns.saturating_add(nanos(lease / 10))
}

/// A process that no longer exists, or has exited and waits to be reaped.
fn holder_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

fn term_path(dir: &Path, term: u64) -> PathBuf {
    dir.join(format!("term-{term}"))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// Every term record's number and path.
fn terms(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        if let Some(term) = name
            .to_str()
            .and_then(|n| n.strip_prefix("term-"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((term, entry.path()));
        }
    }
    Ok(found)
}

/// The record of the highest term, if any term was ever claimed.
fn latest(dir: &Path) -> Result<Option<TermRecord>, Error> {
    let Some(term) = terms(dir)?.into_iter().map(|(t, _)| t).max() else {
        return Ok(None);
    };
    read(dir, term)
}

fn read(dir: &Path, term: u64) -> Result<Option<TermRecord>, Error> {
    let path = term_path(dir, term);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path,
                what: format!("unreadable lease record: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::DataDir { path, source }),
    }
}

/// Writes `record` to a file of its own, complete, and returns that file's path.
fn write_aside(dir: &Path, record: &TermRecord) -> Result<PathBuf, Error> {
    let aside = dir.join(format!(".term-{}.{}", record.term, uuid::Uuid::new_v4()));
    let bytes = serde_json::to_vec(record).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(&aside, bytes).map_err(io_error(&aside))?;
    Ok(aside)
}

/// Claims `record.term`: false if that term already has a record.
fn create(dir: &Path, record: &TermRecord) -> Result<bool, Error> {
    let aside = write_aside(dir, record)?;
    let target = term_path(dir, record.term);
    let linked = std::fs::hard_link(&aside, &target);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::DataDir {
            path: target,
            source,
        }),
    }
}

/// Replaces a term's record whole.
fn replace(dir: &Path, record: &TermRecord) -> Result<(), Error> {
    let aside = write_aside(dir, record)?;
    let target = term_path(dir, record.term);
    std::fs::rename(&aside, &target).map_err(io_error(&target))
}

/// Copies the store `from` to `to` in the data folder, through a temporary name, and
/// syncs it; false if there is no store to copy yet. The source is copied again if it
/// changed meanwhile (a stopped holder that was resumed and wrote before it saw the new
/// term).
async fn copy_store(data_dir: &Path, from: &str, to: &str) -> Result<bool, Error> {
    let source = data_dir.join(from);
    let target = data_dir.join(to);
    let partial = data_dir.join(format!("{to}.copy"));
    tokio::task::spawn_blocking(move || {
        let stamp = |p: &Path| std::fs::metadata(p).map(|m| (m.len(), m.modified().ok()));
        for _ in 0..5 {
            let before = match stamp(&source) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_error(&source)(e)),
            };
            std::fs::copy(&source, &partial).map_err(io_error(&partial))?;
            if stamp(&source).map_err(io_error(&source))? == before {
                std::fs::File::open(&partial)
                    .and_then(|f| f.sync_all())
                    .map_err(io_error(&partial))?;
                std::fs::rename(&partial, &target).map_err(io_error(&target))?;
                return Ok(true);
            }
        }
        Err(Error::Other(format!(
            "the store {} kept changing while it was copied",
            source.display()
        )))
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const LEASE: Duration = Duration::from_millis(400);
    const FILES: StoreFiles = StoreFiles {
        first: "first.db",
        prefix: "term-store-",
        suffix: ".db",
    };
    const FIRST_STORE: &str = FILES.first;

    fn candidate(dir: &Path, index: usize, store: Option<StoreFiles>) -> Candidate {
        Candidate {
            data_dir: dir.to_owned(),
            role: "server",
            index,
            lease: LEASE,
            store,
        }
    }

    async fn claim(dir: &Path, index: usize) -> Option<Leadership> {
        let who = candidate(dir, index, Some(FILES));
        Leadership::try_claim(&who, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_holder_while_its_lease_runs() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim(dir.path(), 0).await.unwrap();
        assert_eq!(first.term(), 1);
        assert!(first.gate().is_open());
        assert!(claim(dir.path(), 1).await.is_none(), "took a running lease");
        assert_eq!(first.store_path(), Some(dir.path().join(FIRST_STORE)));
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once_and_the_store_copied() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim(dir.path(), 0).await.unwrap();
        std::fs::write(first.store_path().unwrap(), b"namespace").unwrap();
        first.release();
        let second = claim(dir.path(), 1).await.unwrap();
        assert_eq!(second.term(), 2);
        assert_eq!(
            std::fs::read(second.store_path().unwrap()).unwrap(),
            b"namespace"
        );
        assert_ne!(second.store_path(), Some(dir.path().join(FIRST_STORE)));
        // The first term's store file is no longer named.
        assert!(!dir.path().join(FIRST_STORE).exists());
    }

    #[tokio::test]
    async fn a_holder_that_stops_renewing_is_replaced_and_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = claim(dir.path(), 0).await.unwrap();
        let gate = first.gate();
        // Not renewed (as if stopped): after the lease and its margin another server wins.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let second = loop {
            if let Some(s) = claim(dir.path(), 1).await {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "never replaced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(second.term(), 2);
        assert!(
            !gate.is_open(),
            "the old holder's gate stayed open past its lease"
        );
        assert!(second.gate().is_open());
        // Resumed, the old holder finds the later term and is lost.
        let lost = first.renew().await.unwrap_err();
        assert_eq!(lost.by_term, Some(2));
        assert_eq!(lost.by_index, Some(1));
        assert!(!gate.is_open());
    }

    #[tokio::test]
    async fn a_lapsed_holder_with_no_rival_takes_the_next_term() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = claim(dir.path(), 0).await.unwrap();
        let store = first.store_path();
        let gate = first.gate();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gate.is_open() {
            assert!(std::time::Instant::now() < deadline, "lease never ran out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.renew().await.unwrap();
        assert_eq!(first.term(), 2);
        assert!(gate.is_open());
        // Same process, same store: nothing was copied.
        assert_eq!(first.store_path(), store);
    }

    #[tokio::test]
    async fn a_dead_holder_is_replaced_without_waiting_out_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let ldir = leader_dir(dir.path());
        std::fs::create_dir_all(&ldir).unwrap();
        // A record of a holder whose process is gone, with a long lease.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let dead = TermRecord {
            term: 7,
            index: 0,
            pid: child.id(),
            holder: "gone".into(),
            store: FIRST_STORE.into(),
            expires_ns: now_ns() + nanos(Duration::from_secs(3600)),
        };
        assert!(create(&ldir, &dead).unwrap());
        let next = tokio::time::timeout(Duration::from_secs(5), claim(dir.path(), 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.term(), 8);
    }

    #[test]
    fn a_term_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let record = TermRecord {
            term: 3,
            index: 0,
            pid: std::process::id(),
            holder: "a".into(),
            store: FIRST_STORE.into(),
            expires_ns: now_ns(),
        };
        assert!(create(dir.path(), &record).unwrap());
        let rival = TermRecord {
            holder: "b".into(),
            ..record.clone()
        };
        assert!(!create(dir.path(), &rival).unwrap());
        assert_eq!(read(dir.path(), 3).unwrap().unwrap().holder, "a");
    }

    #[tokio::test]
    async fn a_kind_without_a_store_copies_nothing_and_names_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("records.json"), b"[]").unwrap();
        let first = Leadership::try_claim(&candidate(dir.path(), 0, None), "a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.store_path(), None);
        first.release();
        let second = Leadership::try_claim(&candidate(dir.path(), 1, None), "b")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.term(), 2);
        assert_eq!(second.store_path(), None);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["leader", "records.json"]);
    }

    #[test]
    fn records_of_older_clusters_still_read() {
        let old = r#"{"term":4,"mds":1,"pid":1,"holder":"h","store":"mds.redb","expires_ns":0}"#;
        let record: TermRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.index, 1);
        assert_eq!(record.store, "mds.redb");
    }
}
