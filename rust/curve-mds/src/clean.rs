//! The asynchronous clean of a deleted snapshot (upstream's CleanCore for snapshots): every
//! chunk of the file gets `DeleteChunkSnapshotOrCorrectSn(correctedSn = snapshot seq + 1)`
//! on its copyset's leader, which drops the chunk's snapshot file or raises its correctedSn
//! so the next write at the file's seqNum copies nothing. When every chunk answered, the
//! snapshot's record goes. A chunk that fails (a chunkserver down, or one that does not
//! serve the call) leaves the snapshot kFileDeleting and the clean retries, as upstream's
//! failed clean tasks do; one interrupted by a restart resumes when the MDS starts.
//! The call goes over baidu_std, as upstream's MDS sends it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use curve_brpc::Channel;
use curve_proto::chunkserver::{ChunkOpStatus, ChunkOpType, ChunkRequest, ChunkResponse};
use prost::Message as _;

use crate::namespace::{CleanPlan, Namespace};
use crate::topology::Topology;

const CHUNK_SERVICE: &str = "curve.chunkserver.ChunkService";
const DELETE_SNAP: &str = "DeleteChunkSnapshotOrCorrectSn";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two passes of a clean that had a chunk fail.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Progress of a running clean, as CheckSnapShotStatus reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// 0..=100: share of chunks done.
    pub percent: u32,
    /// Passes that had a chunk fail.
    pub failures: u32,
}

pub(crate) struct Cleaner {
    ns: Arc<Namespace>,
    topology: Arc<Topology>,
    /// (file id, seq) → progress of cleans running in this process.
    running: Mutex<HashMap<(u64, u64), Progress>>,
    /// The clean tasks, aborted when the MDS stops: each holds the store open.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Cleaner {
    pub(crate) fn new(ns: Arc<Namespace>, topology: Arc<Topology>) -> Arc<Self> {
        Arc::new(Self {
            ns,
            topology,
            running: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(u64, u64), Progress>) -> R) -> R {
        // Each change is one insert or remove, so a poisoned map is still consistent.
        let mut guard = match self.running.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub(crate) fn progress(&self, file_id: u64, seq: u64) -> Option<Progress> {
        self.with(|m| m.get(&(file_id, seq)).copied())
    }

    /// Starts the clean of `plan` unless one runs already.
    pub(crate) fn submit(self: &Arc<Self>, plan: CleanPlan) {
        let key = (plan.file_id, plan.seq);
        let fresh = self.with(|m| {
            if m.contains_key(&key) {
                return false;
            }
            m.insert(
                key,
                Progress {
                    percent: 0,
                    failures: 0,
                },
            );
            true
        });
        if fresh {
            let this = Arc::clone(self);
            let task = tokio::spawn(async move { this.run(plan).await });
            let mut tasks = match self.tasks.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            tasks.retain(|t| !t.is_finished());
            tasks.push(task.abort_handle());
        }
    }

    /// Stops every clean (the MDS stops serving); the next start resumes them.
    pub(crate) fn stop(&self) {
        let tasks = match self.tasks.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for t in tasks {
            t.abort();
        }
    }

    /// Resumes the cleans a previous run left unfinished.
    pub(crate) async fn resume(self: &Arc<Self>) {
        let ns = Arc::clone(&self.ns);
        let pending = match tokio::task::spawn_blocking(move || {
            let mut plans = Vec::new();
            for (file, seq) in ns.unfinished_cleans()? {
                plans.push(ns.clean_plan(file, seq)?);
            }
            Ok::<_, crate::store::Refusal>(plans)
        })
        .await
        {
            Ok(Ok(plans)) => plans,
            Ok(Err(r)) => {
                tracing::error!("cannot list unfinished snapshot cleans: {:?}", r.0);
                return;
            }
            Err(e) => {
                tracing::error!("cannot list unfinished snapshot cleans: {e}");
                return;
            }
        };
        for plan in pending {
            tracing::info!(
                file = plan.file_id,
                seq = plan.seq,
                "resuming snapshot clean"
            );
            self.submit(plan);
        }
    }

    async fn run(self: Arc<Self>, plan: CleanPlan) {
        let key = (plan.file_id, plan.seq);
        let corrected_sn = plan.seq + 1;
        let total = plan.chunks.len().max(1);
        let mut done = vec![false; plan.chunks.len()];
        let mut channels: HashMap<String, Channel> = HashMap::new();
        loop {
            let mut failed = false;
            for (i, &(pool, copyset, chunk)) in plan.chunks.iter().enumerate() {
                if done[i] {
                    continue;
                }
                match self
                    .correct(&mut channels, pool, copyset, chunk, corrected_sn)
                    .await
                {
                    Ok(()) => {
                        done[i] = true;
                        let finished = done.iter().filter(|d| **d).count();
                        let percent = u32::try_from(finished * 99 / total).unwrap_or(99);
                        self.with(|m| {
                            if let Some(p) = m.get_mut(&key) {
                                p.percent = percent;
                            }
                        });
                    }
                    Err(why) => {
                        tracing::warn!(chunk, copyset, "snapshot clean: {why}");
                        failed = true;
                    }
                }
            }
            if !failed {
                let ns = Arc::clone(&self.ns);
                let finished =
                    tokio::task::spawn_blocking(move || ns.finish_clean(key.0, key.1)).await;
                match finished {
                    Ok(Ok(())) => {
                        self.with(|m| m.remove(&key));
                        return;
                    }
                    Ok(Err(r)) => tracing::error!("snapshot clean: removing the record: {:?}", r.0),
                    Err(e) => tracing::error!("snapshot clean: removing the record: {e}"),
                }
            }
            self.with(|m| {
                if let Some(p) = m.get_mut(&key) {
                    p.failures = p.failures.saturating_add(1);
                }
            });
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// One chunk on its copyset's leader: the members in order, following a redirect.
    async fn correct(
        &self,
        channels: &mut HashMap<String, Channel>,
        pool: u32,
        copyset: u32,
        chunk: u64,
        corrected_sn: u64,
    ) -> Result<(), String> {
        let config = &self.topology.config;
        let members = config
            .copysets
            .iter()
            .find(|c| c.id == copyset)
            .map(|c| c.members.clone())
            .ok_or_else(|| format!("copyset {copyset} is not in the topology"))?;
        let mut addrs: Vec<String> = members
            .iter()
            .filter_map(|id| config.chunkservers.iter().find(|c| c.id == *id))
            .map(|c| format!("{}:{}", c.host, c.port))
            .collect();
        let request = ChunkRequest {
            op_type: ChunkOpType::ChunkOpDeleteSnap as i32,
            logic_pool_id: pool,
            copyset_id: copyset,
            chunk_id: chunk,
            corrected_sn: Some(corrected_sn),
            ..Default::default()
        };
        let payload = Bytes::from(request.encode_to_vec());
        let mut last = String::from("no replica to ask");
        let mut i = 0;
        while i < addrs.len() && i < 8 {
            let addr = addrs[i].clone();
            i += 1;
            let usable = channels.get(&addr).is_some_and(Channel::is_usable);
            if !usable {
                match Channel::connect(&addr, CONNECT_TIMEOUT, curve_brpc::DEFAULT_MAX_BODY).await {
                    Ok(c) => {
                        channels.insert(addr.clone(), c);
                    }
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                }
            }
            let Some(channel) = channels.get(&addr) else {
                continue;
            };
            let reply = match channel
                .call(
                    CHUNK_SERVICE,
                    DELETE_SNAP,
                    payload.clone(),
                    Bytes::new(),
                    CALL_TIMEOUT,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            let resp = ChunkResponse::decode(reply.payload)
                .map_err(|e| format!("{addr}: undecodable reply: {e}"))?;
            match ChunkOpStatus::try_from(resp.status) {
                // A chunk never written has nothing to correct.
                Ok(ChunkOpStatus::Success | ChunkOpStatus::ChunkNotexist) => return Ok(()),
                Ok(ChunkOpStatus::Redirected) => {
                    if let Some(leader) = resp.redirect.as_deref().and_then(redirect_addr)
                        && !addrs[i..].contains(&leader)
                    {
                        addrs.insert(i, leader);
                    }
                    last = format!("{addr}: not the leader");
                }
                other => {
                    return Err(format!("{addr}: answered {other:?} ({})", resp.status));
                }
            }
        }
        Err(last)
    }
}

/// A redirect names the leader as `ip:port:index` (a braft PeerId); its `ip:port`.
fn redirect_addr(peer: &str) -> Option<String> {
    let mut parts = peer.split(':');
    let ip = parts.next().filter(|s| !s.is_empty())?;
    let port = parts.next().filter(|s| s.parse::<u16>().is_ok())?;
    Some(format!("{ip}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::redirect_addr;

    #[test]
    fn redirects_name_a_peer() {
        assert_eq!(
            redirect_addr("127.0.0.1:8200:0").as_deref(),
            Some("127.0.0.1:8200")
        );
        assert_eq!(
            redirect_addr("127.0.0.1:8200").as_deref(),
            Some("127.0.0.1:8200")
        );
        assert_eq!(redirect_addr(""), None);
        assert_eq!(redirect_addr("h:notaport"), None);
    }
}
