//! What the client remembers between IOs: per open file, which chunk ids and copysets each
//! segment holds (and which segments are holes); client-wide, each copyset's peers and
//! believed leader. Leader discovery (§11.1) lives here because it only ever updates this
//! cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use curve_proto::chunkserver::{GetLeaderRequest2, GetLeaderResponse2};
use curve_proto::mds::PageFileSegment;
use curve_proto::mds::topology::CopySetServerInfo;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::conf::ClientConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::lock;
use crate::mds::MdsClient;
use crate::transport::{self, Transport, methods};

// ---------------------------------------------------------------------------------------
// Segments of one open file.

/// Where one chunk lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkAddr {
    pub logical_pool_id: u32,
    pub copyset_id: u32,
    pub chunk_id: u64,
}

/// A segment as the MDS described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub logical_pool_id: u32,
    /// `(chunkID, copysetID)` in file-offset order.
    pub chunks: Vec<(u64, u32)>,
}

impl SegmentInfo {
    pub fn from_proto(seg: &PageFileSegment) -> Self {
        Self {
            logical_pool_id: seg.logical_pool_id,
            chunks: seg
                .chunks
                .iter()
                .map(|c| (c.chunk_id, c.copyset_id))
                .collect(),
        }
    }

    /// The chunk at position `i` of the segment.
    pub fn chunk(&self, i: u64) -> Option<ChunkAddr> {
        let (chunk_id, copyset_id) = *self.chunks.get(usize::try_from(i).ok()?)?;
        Some(ChunkAddr {
            logical_pool_id: self.logical_pool_id,
            copyset_id,
            chunk_id,
        })
    }
}

#[derive(Debug, Clone)]
pub enum SegmentSlot {
    Allocated(Arc<SegmentInfo>),
    /// The MDS said kSegmentNotAllocated on a read: zeros until a write allocates it.
    Hole,
}

/// Segment index → slot, for one open file.
#[derive(Default)]
pub struct SegmentCache {
    slots: RwLock<HashMap<u64, SegmentSlot>>,
    /// Serialises MDS lookups so a burst of sub-requests to a new segment asks once.
    fetch: tokio::sync::Mutex<()>,
}

impl SegmentCache {
    pub fn get(&self, segment_index: u64) -> Option<SegmentSlot> {
        self.slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&segment_index)
            .cloned()
    }

    pub fn put(&self, segment_index: u64, slot: SegmentSlot) {
        self.slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(segment_index, slot);
    }

    /// Forgets every cached hole, so that the next IO asks the MDS again.
    pub fn forget_holes(&self) {
        self.slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, slot| !matches!(slot, SegmentSlot::Hole));
    }

    pub fn fetch_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.fetch
    }
}

// ---------------------------------------------------------------------------------------
// Copysets and leaders, shared by all files of a client.

/// One replica of a copyset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub chunkserver_id: u32,
    /// hostIp:port, what braft reports as the leader.
    pub internal: String,
    /// externalIp:port (hostIp if absent), where IO goes.
    pub external: String,
}

#[derive(Debug, Default)]
struct CopysetState {
    peers: Vec<PeerAddr>,
    leader: Option<usize>,
    /// Bumped whenever the leader changes, so a caller can tell whether someone else
    /// already refreshed after it saw a failure.
    version: u64,
}

pub struct CopysetEntry {
    pub logical_pool_id: u32,
    pub copyset_id: u32,
    state: Mutex<CopysetState>,
    refresh: tokio::sync::Mutex<()>,
}

/// The leader to send to and the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    pub endpoint: String,
    pub version: u64,
}

impl CopysetEntry {
    fn new(logical_pool_id: u32, copyset_id: u32, peers: Vec<PeerAddr>) -> Self {
        Self {
            logical_pool_id,
            copyset_id,
            state: Mutex::new(CopysetState {
                peers,
                leader: None,
                version: 0,
            }),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The cached leader, if any.
    pub fn cached_leader(&self) -> Option<LeaderView> {
        let st = lock(&self.state);
        let i = st.leader?;
        st.peers.get(i).map(|p| LeaderView {
            endpoint: p.external.clone(),
            version: st.version,
        })
    }

    pub fn version(&self) -> u64 {
        lock(&self.state).version
    }

    /// Records `addr` (braft PeerId text or ip:port) as leader if it is a known peer.
    fn set_leader_addr(&self, addr: &str) -> Option<LeaderView> {
        let key = peer_ip_port(addr)?;
        let mut st = lock(&self.state);
        let i = st
            .peers
            .iter()
            .position(|p| p.internal == key || p.external == key)?;
        let before = st
            .leader
            .and_then(|j| st.peers.get(j))
            .map(|p| p.external.clone());
        let changed = st.leader != Some(i);
        if changed {
            st.leader = Some(i);
            st.version += 1;
        }
        let view = LeaderView {
            endpoint: st.peers[i].external.clone(),
            version: st.version,
        };
        drop(st);
        if changed {
            match before {
                Some(from) => crate::events::warn_limited!(
                    logical_pool = self.logical_pool_id,
                    copyset = self.copyset_id,
                    from = %from,
                    endpoint = %view.endpoint,
                    "copyset ({}, {}) leader changed: {from} -> {}",
                    self.logical_pool_id,
                    self.copyset_id,
                    view.endpoint
                ),
                None => tracing::debug!(
                    logical_pool = self.logical_pool_id,
                    copyset = self.copyset_id,
                    endpoint = %view.endpoint,
                    "copyset ({}, {}) leader is {}",
                    self.logical_pool_id,
                    self.copyset_id,
                    view.endpoint
                ),
            }
        }
        Some(view)
    }

    fn set_peers(&self, peers: Vec<PeerAddr>) {
        let mut st = lock(&self.state);
        let old_leader = st.leader.and_then(|i| st.peers.get(i).cloned());
        st.leader = old_leader.and_then(|l| peers.iter().position(|p| *p == l));
        st.peers = peers;
    }

    fn peers_to_ask(&self) -> Vec<String> {
        let st = lock(&self.state);
        let others: Vec<String> = st
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != st.leader)
            .map(|(_, p)| p.external.clone())
            .collect();
        if others.is_empty() {
            st.peers.iter().map(|p| p.external.clone()).collect()
        } else {
            others
        }
    }
}

/// `ip:port` of braft's `ip:port:index` text (or of plain `ip:port`).
pub fn peer_ip_port(addr: &str) -> Option<String> {
    let mut parts = addr.trim().split(':');
    let ip = parts.next().filter(|s| !s.is_empty())?;
    let port: u16 = parts.next()?.parse().ok()?;
    match parts.next() {
        None => {}
        Some(idx) if idx.parse::<u32>().is_ok() && parts.next().is_none() => {}
        Some(_) => return None,
    }
    Some(format!("{ip}:{port}"))
}

fn peers_from_proto(info: &CopySetServerInfo) -> Vec<PeerAddr> {
    info.cs_locs
        .iter()
        .map(|l| {
            let ext_ip = l
                .external_ip
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(&l.host_ip);
            PeerAddr {
                chunkserver_id: l.chunk_server_id,
                internal: format!("{}:{}", l.host_ip, l.port),
                external: format!("{}:{}", ext_ip, l.port),
            }
        })
        .collect()
}

pub struct CopysetCache {
    map: RwLock<HashMap<(u32, u32), Arc<CopysetEntry>>>,
    mds: Arc<MdsClient>,
    transport: Arc<dyn Transport>,
    get_leader_timeout: Duration,
    get_leader_retry: u32,
    retry_interval: Duration,
}

impl CopysetCache {
    pub fn new(mds: Arc<MdsClient>, transport: Arc<dyn Transport>, conf: &ClientConfig) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            mds,
            transport,
            get_leader_timeout: Duration::from_millis(conf.metacache_get_leader_timeout_ms),
            get_leader_retry: conf.metacache_get_leader_retry,
            retry_interval: Duration::from_micros(conf.metacache_rpc_retry_interval_us),
        }
    }

    pub fn get(&self, logical_pool_id: u32, copyset_id: u32) -> Option<Arc<CopysetEntry>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(logical_pool_id, copyset_id))
            .cloned()
    }

    /// Makes sure every listed copyset has peers cached, asking the MDS once for the
    /// missing ones (§8.3).
    pub async fn ensure(&self, logical_pool_id: u32, copyset_ids: &[u32]) -> Result<()> {
        let mut missing: Vec<u32> = copyset_ids
            .iter()
            .copied()
            .filter(|id| self.get(logical_pool_id, *id).is_none())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let infos = self
            .mds
            .get_chunkserver_list_in_copysets(logical_pool_id, &missing)
            .await?;
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for info in &infos {
            map.entry((logical_pool_id, info.copyset_id))
                .or_insert_with(|| {
                    Arc::new(CopysetEntry::new(
                        logical_pool_id,
                        info.copyset_id,
                        peers_from_proto(info),
                    ))
                });
        }
        drop(map);
        if let Some(id) = missing
            .iter()
            .find(|id| self.get(logical_pool_id, **id).is_none())
        {
            return Err(Error::failed(format!(
                "MDS returned no chunkservers for copyset ({logical_pool_id}, {id})"
            )));
        }
        Ok(())
    }

    /// The entry for a copyset, fetched from the MDS if unknown.
    pub async fn entry(&self, logical_pool_id: u32, copyset_id: u32) -> Result<Arc<CopysetEntry>> {
        if let Some(e) = self.get(logical_pool_id, copyset_id) {
            return Ok(e);
        }
        self.ensure(logical_pool_id, &[copyset_id]).await?;
        self.get(logical_pool_id, copyset_id).ok_or_else(|| {
            Error::failed(format!(
                "copyset ({logical_pool_id}, {copyset_id}) unknown to the MDS"
            ))
        })
    }

    /// The leader to send to: the cached one or a fresh lookup finished by `deadline`.
    pub async fn leader(&self, entry: &CopysetEntry, deadline: Instant) -> Result<LeaderView> {
        match entry.cached_leader() {
            Some(l) => Ok(l),
            None => self.refresh_leader(entry, entry.version(), deadline).await,
        }
    }

    /// Takes a leader named by a REDIRECTED response, if it is a known peer.
    pub fn redirect(&self, entry: &CopysetEntry, addr: &str) -> Option<LeaderView> {
        entry.set_leader_addr(addr)
    }

    /// Asks the peers who leads (§11.1), unless the leader already changed since the
    /// caller read `seen_version`. Gives up at `deadline`: the MDS lookups it may make
    /// would otherwise outlast the IO that asked.
    pub async fn refresh_leader(
        &self,
        entry: &CopysetEntry,
        seen_version: u64,
        deadline: Instant,
    ) -> Result<LeaderView> {
        match tokio::time::timeout_at(
            deadline.into(),
            self.refresh_leader_inner(entry, seen_version),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Error::failed(format!(
                "no leader for copyset ({}, {}) before the IO's deadline",
                entry.logical_pool_id, entry.copyset_id
            ))),
        }
    }

    async fn refresh_leader_inner(
        &self,
        entry: &CopysetEntry,
        seen_version: u64,
    ) -> Result<LeaderView> {
        let _one_at_a_time = entry.refresh.lock().await;
        if entry.version() != seen_version
            && let Some(l) = entry.cached_leader()
        {
            return Ok(l);
        }
        let mut last = String::from("no peers");
        for attempt in 0..self.get_leader_retry.max(1) {
            match self.ask_peers(entry).await {
                Ok(addr) => {
                    if let Some(l) = entry.set_leader_addr(&addr) {
                        return Ok(l);
                    }
                    // A leader we do not know: the copyset's membership changed.
                    self.refetch_peers(entry).await.ok();
                    if let Some(l) = entry.set_leader_addr(&addr) {
                        return Ok(l);
                    }
                    last = format!("leader {addr} is not a member per the MDS");
                }
                Err(e) => {
                    last = e;
                    if self.refetch_peers(entry).await.is_err()
                        && attempt + 1 < self.get_leader_retry
                    {
                        tokio::time::sleep(self.retry_interval).await;
                    }
                }
            }
        }
        Err(Error::failed(format!(
            "no leader for copyset ({}, {}): {last}",
            entry.logical_pool_id, entry.copyset_id
        )))
    }

    async fn refetch_peers(&self, entry: &CopysetEntry) -> Result<()> {
        let infos = self
            .mds
            .get_chunkserver_list_in_copysets(entry.logical_pool_id, &[entry.copyset_id])
            .await?;
        let info = infos
            .iter()
            .find(|i| i.copyset_id == entry.copyset_id)
            .ok_or_else(|| Error::new(ErrorCode::NotExist, "copyset unknown to the MDS"))?;
        entry.set_peers(peers_from_proto(info));
        Ok(())
    }

    /// GetLeader to the peers at once; the first answer wins.
    async fn ask_peers(&self, entry: &CopysetEntry) -> std::result::Result<String, String> {
        let peers = entry.peers_to_ask();
        if peers.is_empty() {
            return Err("copyset has no peers".into());
        }
        let req = GetLeaderRequest2 {
            logic_pool_id: entry.logical_pool_id,
            copyset_id: entry.copyset_id,
            peer: None,
        };
        let mut asks: FuturesUnordered<_> = peers
            .iter()
            .map(|p| {
                transport::unary::<_, GetLeaderResponse2>(
                    self.transport.as_ref(),
                    p,
                    &methods::GET_LEADER,
                    &req,
                    self.get_leader_timeout,
                )
            })
            .collect();
        let mut last = String::new();
        while let Some(r) = asks.next().await {
            match r {
                Ok(resp) => match resp.leader.address {
                    Some(a) if !a.is_empty() => return Ok(a),
                    _ => last = "GetLeader answered without an address".into(),
                },
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// Where each of `pieces` goes, given how to look a segment up: `None` for a piece inside
/// a segment that is a hole. Pieces come in file order, so each segment is looked up once
/// per call, hole or not. `path` names the file in errors.
pub(crate) async fn locate_pieces<F, Fut>(
    geometry: &crate::io::Geometry,
    pieces: &[crate::io::ChunkPiece],
    path: &str,
    mut look_up: F,
) -> Result<Vec<Option<ChunkAddr>>>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<SegmentSlot>>,
{
    let mut last: Option<(u64, SegmentSlot)> = None;
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        let seg = geometry.segment_of_chunk(p.chunk_index);
        let slot = match &last {
            Some((i, s)) if *i == seg => s.clone(),
            _ => {
                let s = look_up(seg).await?;
                last = Some((seg, s.clone()));
                s
            }
        };
        out.push(match slot {
            SegmentSlot::Hole => None,
            SegmentSlot::Allocated(info) => {
                let i = p.chunk_index - seg * geometry.chunks_per_segment();
                Some(info.chunk(i).ok_or_else(|| {
                    Error::failed(format!(
                        "segment {seg} of {path} has no chunk {i}; the MDS sent {} chunks",
                        info.chunks.len()
                    ))
                })?)
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_braft_peer_ids() {
        assert_eq!(
            peer_ip_port("127.0.0.1:8200:0").as_deref(),
            Some("127.0.0.1:8200")
        );
        assert_eq!(
            peer_ip_port("10.0.0.2:8201").as_deref(),
            Some("10.0.0.2:8201")
        );
        assert_eq!(peer_ip_port("10.0.0.2"), None);
        assert_eq!(peer_ip_port("10.0.0.2:x"), None);
        assert_eq!(peer_ip_port("10.0.0.2:1:2:3"), None);
        assert_eq!(peer_ip_port(""), None);
    }

    #[test]
    fn leader_is_matched_against_internal_or_external_address() {
        let e = CopysetEntry::new(
            1,
            2,
            vec![
                PeerAddr {
                    chunkserver_id: 1,
                    internal: "10.0.0.1:8200".into(),
                    external: "192.168.0.1:8200".into(),
                },
                PeerAddr {
                    chunkserver_id: 2,
                    internal: "10.0.0.2:8200".into(),
                    external: "192.168.0.2:8200".into(),
                },
            ],
        );
        assert_eq!(e.cached_leader(), None);
        let l = e.set_leader_addr("10.0.0.2:8200:0").expect("known peer");
        assert_eq!(l.endpoint, "192.168.0.2:8200");
        assert_eq!(l.version, 1);
        // Same leader again: no version bump.
        assert_eq!(
            e.set_leader_addr("192.168.0.2:8200").map(|l| l.version),
            Some(1)
        );
        assert_eq!(e.peers_to_ask(), vec!["192.168.0.1:8200".to_string()]);
        assert!(e.set_leader_addr("10.9.9.9:1:0").is_none());
    }

    #[test]
    fn segment_chunk_lookup_is_bounded() {
        let s = SegmentInfo {
            logical_pool_id: 3,
            chunks: vec![(10, 1), (11, 2)],
        };
        assert_eq!(
            s.chunk(1),
            Some(ChunkAddr {
                logical_pool_id: 3,
                copyset_id: 2,
                chunk_id: 11
            })
        );
        assert_eq!(s.chunk(2), None);
    }
}
