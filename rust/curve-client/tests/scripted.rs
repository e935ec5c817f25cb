//! The client's reaction to answers a real cluster rarely gives on demand: every chunk
//! status (§7.3, §11.2) and every RefreshSession outcome (§10). Driven through the public
//! `Client` over a scripted in-memory transport: a fake MDS and three fake chunkservers
//! whose ReadChunk/WriteChunk and RefreshSession answers come from a script. The chunk
//! answers are the real chunkservers' own: `statuses.rs` checks each that a real local
//! chunkserver gives on demand against the same shape, over both wires.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use curve_client::transport::{RpcMethod, RpcReply, Transport, TransportError};
use curve_client::{Client, ClientConfig, ErrorCode, UserInfo};
use curve_proto::chunkserver::{
    ChunkOpStatus, ChunkRequest, ChunkResponse, GetLeaderRequest2, GetLeaderResponse2,
};
use curve_proto::common::{ChunkServerLocation, Peer};
use curve_proto::mds::topology::{
    CopySetServerInfo, GetChunkServerListInCopySetsRequest, GetChunkServerListInCopySetsResponse,
};
use curve_proto::mds::*;
use futures::future::BoxFuture;
use prost::Message;

const MIB: u64 = 1 << 20;
const MDS: &str = "10.0.0.9:6666";
const CS: [&str; 3] = ["10.0.0.1:8200", "10.0.0.2:8200", "10.0.0.3:8200"];

#[derive(Default)]
struct State {
    /// Answers for the next ReadChunk/WriteChunk calls; Success once empty.
    script: VecDeque<ChunkOpStatus>,
    redirect: Option<String>,
    leader: String,
    seq_num: u64,
    epoch: u64,
    /// What RefreshSession answers, and the inode id it reports.
    refresh_status: Option<StatusCode>,
    refresh_id: Option<u64>,
    lease_us: u32,
    /// When set, a successful ReadChunk returns this many bytes whatever was asked.
    read_len: Option<usize>,
    dead: HashSet<String>,
    data: HashMap<(u64, u32), Vec<u8>>,
    /// (endpoint, method, chunk request if any)
    calls: Vec<(String, &'static str, Option<ChunkRequest>)>,
    /// When each chunk request arrived.
    chunk_call_times: Vec<Instant>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

fn file_info(s: &State) -> FileInfo {
    FileInfo {
        id: Some(42),
        file_name: Some("v".into()),
        file_type: Some(FileType::InodePagefile as i32),
        chunk_size: Some(MIB as u32),
        segment_size: Some(4 * MIB as u32),
        length: Some(16 * MIB),
        seq_num: Some(s.seq_num),
        epoch: Some(s.epoch),
        blocksize: Some(4096),
        ..Default::default()
    }
}

impl Fake {
    fn new() -> Fake {
        let f = Fake::default();
        {
            let mut s = f.0.lock().unwrap();
            s.leader = format!("{}:0", CS[0]);
            s.seq_num = 1;
            s.lease_us = 5_000_000;
        }
        f
    }

    fn answer(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        req: Bytes,
        att: Bytes,
    ) -> Result<RpcReply, TransportError> {
        let mut s = self.0.lock().unwrap();
        let chunk_req = if method.service.ends_with("ChunkService") {
            Some(ChunkRequest::decode(req.clone()).unwrap())
        } else {
            None
        };
        if chunk_req.is_some() {
            s.chunk_call_times.push(Instant::now());
        }
        s.calls
            .push((endpoint.to_string(), method.method, chunk_req.clone()));
        if s.dead.contains(endpoint) {
            return Err(TransportError::Connect {
                endpoint: endpoint.into(),
                message: "refused".into(),
            });
        }
        let ok = StatusCode::KOk as i32;
        let payload = match method.method {
            "OpenFile" => OpenFileResponse {
                status_code: ok,
                proto_session: Some(ProtoSession {
                    session_id: String::new(),
                    lease_time: s.lease_us,
                    create_time: 1,
                    session_status: 0,
                }),
                file_info: Some(file_info(&s)),
                clone_source_segment: None,
            }
            .encode_to_vec(),
            "GetFileInfo" => GetFileInfoResponse {
                status_code: ok,
                file_info: Some(file_info(&s)),
            }
            .encode_to_vec(),
            "RefreshSession" => {
                let status = s.refresh_status.unwrap_or(StatusCode::KOk);
                let mut info = file_info(&s);
                if let Some(id) = s.refresh_id {
                    info.id = Some(id);
                }
                ReFreshSessionResponse {
                    status_code: status as i32,
                    session_id: String::new(),
                    file_info: (status == StatusCode::KOk).then_some(info),
                    proto_session: None,
                }
                .encode_to_vec()
            }
            "CloseFile" => CloseFileResponse { status_code: ok }.encode_to_vec(),
            "GetOrAllocateSegment" => {
                let r = GetOrAllocateSegmentRequest::decode(req).unwrap();
                GetOrAllocateSegmentResponse {
                    status_code: ok,
                    page_file_segment: Some(PageFileSegment {
                        logical_pool_id: 1,
                        start_offset: r.offset,
                        segment_size: 4 * MIB as u32,
                        chunk_size: MIB as u32,
                        chunks: (0..4)
                            .map(|i| PageFileChunkInfo {
                                chunk_id: r.offset / MIB + i + 100,
                                copyset_id: 7,
                            })
                            .collect(),
                    }),
                }
                .encode_to_vec()
            }
            "GetChunkServerListInCopySets" => {
                let r = GetChunkServerListInCopySetsRequest::decode(req).unwrap();
                GetChunkServerListInCopySetsResponse {
                    status_code: 0,
                    cs_info: r
                        .copyset_id
                        .iter()
                        .map(|id| CopySetServerInfo {
                            copyset_id: *id,
                            cs_locs: CS
                                .iter()
                                .enumerate()
                                .map(|(i, a)| {
                                    let (ip, port) = a.split_once(':').unwrap();
                                    ChunkServerLocation {
                                        chunk_server_id: i as u32 + 1,
                                        host_ip: ip.into(),
                                        port: port.parse().unwrap(),
                                        external_ip: Some(ip.into()),
                                    }
                                })
                                .collect(),
                        })
                        .collect(),
                }
                .encode_to_vec()
            }
            "GetLeader" => {
                let _ = GetLeaderRequest2::decode(req).unwrap();
                GetLeaderResponse2 {
                    leader: Peer {
                        id: None,
                        address: Some(s.leader.clone()),
                    },
                }
                .encode_to_vec()
            }
            "ReadChunk" | "WriteChunk" => {
                let r = chunk_req.unwrap();
                let status = s.script.pop_front().unwrap_or(ChunkOpStatus::Success);
                let mut resp = ChunkResponse {
                    status: status as i32,
                    ..Default::default()
                };
                let mut out = Bytes::new();
                if status == ChunkOpStatus::Redirected {
                    resp.redirect = s.redirect.clone();
                }
                if status == ChunkOpStatus::Success {
                    let key = (r.chunk_id, r.offset.unwrap());
                    if method.method == "WriteChunk" {
                        assert_eq!(att.len(), r.size.unwrap() as usize);
                        s.data.insert(key, att.to_vec());
                    } else {
                        let mut data = s
                            .data
                            .get(&key)
                            .cloned()
                            .unwrap_or_else(|| vec![0; r.size.unwrap() as usize]);
                        if let Some(n) = s.read_len {
                            data.resize(n, 0xee);
                        }
                        out = Bytes::from(data);
                    }
                }
                return Ok(RpcReply {
                    payload: Bytes::from(resp.encode_to_vec()),
                    attachment: out,
                });
            }
            other => panic!("unexpected method {other}"),
        };
        Ok(RpcReply {
            payload: Bytes::from(payload),
            attachment: Bytes::new(),
        })
    }

    fn chunk_calls(&self) -> Vec<(String, ChunkRequest)> {
        self.0
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter_map(|(e, _, r)| r.clone().map(|r| (e.clone(), r)))
            .collect()
    }

    fn count(&self, method: &str) -> usize {
        let s = self.0.lock().unwrap();
        s.calls.iter().filter(|c| c.1 == method).count()
    }

    fn script(&self, statuses: &[ChunkOpStatus]) {
        let mut s = self.0.lock().unwrap();
        s.script = statuses.iter().copied().collect();
        s.calls.clear();
        s.chunk_call_times.clear();
    }
}

impl Transport for Fake {
    fn call(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        request: Bytes,
        attachment: Bytes,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcReply, TransportError>> {
        let r = self.answer(endpoint, method, request, attachment);
        Box::pin(async move { r })
    }
}

fn setup(tweak: impl FnOnce(&mut ClientConfig)) -> (Client, Fake) {
    let mut conf = ClientConfig {
        mds_addrs: vec![MDS.into()],
        chunkserver_op_retry_interval_us: 10_000,
        chunkserver_op_max_retry: 5,
        chunkserver_max_retry_time_ms: 5_000,
        ..ClientConfig::default()
    };
    tweak(&mut conf);
    let fake = Fake::new();
    (
        Client::with_transport(conf, Arc::new(fake.clone())).unwrap(),
        fake,
    )
}

fn user() -> UserInfo {
    UserInfo {
        owner: "u".into(),
        password: String::new(),
    }
}

/// Opens the file and warms the caches with one successful write.
async fn opened(c: &Client, f: &Fake) -> i32 {
    let fd = c.open("/v", &user()).await.unwrap();
    c.write(fd, 0, &[1u8; 4096]).await.unwrap();
    f.script(&[]);
    fd
}

#[tokio::test]
async fn write_carries_sn_file_id_and_no_zero_epoch() {
    let (c, f) = setup(|_| {});
    let fd = opened(&c, &f).await;
    c.write(fd, MIB + 8192, &[2u8; 8192]).await.unwrap();
    let mut buf = [0u8; 8192];
    c.read(fd, MIB + 8192, &mut buf).await.unwrap();
    assert_eq!(buf, [2u8; 8192]);
    let calls = f.chunk_calls();
    let (ep, w) = &calls[0];
    assert_eq!(ep, CS[0]);
    assert_eq!(w.op_type, 2);
    assert_eq!(
        (w.chunk_id, w.offset, w.size),
        (101, Some(8192), Some(8192))
    );
    assert_eq!((w.sn, w.file_id, w.epoch), (Some(1), Some(42), None));
    let (_, r) = &calls[1];
    assert_eq!(r.op_type, 1);
    assert_eq!((r.sn, r.file_id, r.epoch), (None, None, None));

    // A non-zero epoch travels with writes.
    let (c, f) = setup(|_| {});
    f.0.lock().unwrap().epoch = 3;
    let fd = opened(&c, &f).await;
    c.write(fd, 0, &[3u8; 4096]).await.unwrap();
    assert_eq!(f.chunk_calls()[0].1.epoch, Some(3));
}

#[tokio::test]
async fn redirect_with_hint_goes_straight_to_the_new_leader() {
    let (c, f) = setup(|_| {});
    let fd = opened(&c, &f).await;
    f.0.lock().unwrap().redirect = Some(format!("{}:0", CS[2]));
    f.script(&[ChunkOpStatus::Redirected]);
    c.write(fd, 0, &[4u8; 4096]).await.unwrap();
    let eps: Vec<String> = f.chunk_calls().into_iter().map(|c| c.0).collect();
    assert_eq!(eps, [CS[0], CS[2]]);
    assert_eq!(f.count("GetLeader"), 0);
    // Without a hint the client asks the peers.
    f.0.lock().unwrap().redirect = None;
    f.0.lock().unwrap().leader = format!("{}:0", CS[1]);
    f.script(&[ChunkOpStatus::Redirected]);
    c.write(fd, 0, &[4u8; 4096]).await.unwrap();
    let eps: Vec<String> = f.chunk_calls().into_iter().map(|c| c.0).collect();
    assert_eq!(eps, [CS[2], CS[1]]);
    assert!(f.count("GetLeader") >= 1);
}

#[tokio::test]
async fn unreachable_leader_is_replaced_via_get_leader() {
    let (c, f) = setup(|_| {});
    let fd = opened(&c, &f).await;
    {
        let mut s = f.0.lock().unwrap();
        s.dead.insert(CS[0].into());
        s.leader = format!("{}:0", CS[1]);
    }
    c.write(fd, 0, &[5u8; 4096]).await.unwrap();
    let eps: Vec<String> = f.chunk_calls().into_iter().map(|c| c.0).collect();
    assert_eq!(eps, [CS[0], CS[1]]);
}

#[tokio::test]
async fn final_statuses_fail_at_once() {
    for (status, code) in [
        (ChunkOpStatus::EpochTooOld, ErrorCode::EpochTooOld),
        (ChunkOpStatus::Nospace, ErrorCode::NoSpace),
        (ChunkOpStatus::InvalidRequest, ErrorCode::InvalidRequest),
        (ChunkOpStatus::ChunkExist, ErrorCode::Exists),
        (ChunkOpStatus::ChunkNotexist, ErrorCode::NotExist),
    ] {
        let (c, f) = setup(|_| {});
        let fd = opened(&c, &f).await;
        f.script(&[status]);
        let e = c.write(fd, 0, &[6u8; 4096]).await.unwrap_err();
        assert_eq!(e.code, code, "{status:?}: {e}");
        assert_eq!(f.chunk_calls().len(), 1, "{status:?} must not be retried");
    }
}

#[tokio::test]
async fn read_of_a_chunk_never_written_is_zeros() {
    let (c, f) = setup(|_| {});
    let fd = opened(&c, &f).await;
    f.script(&[ChunkOpStatus::ChunkNotexist]);
    let mut buf = [9u8; 4096];
    c.read(fd, 2 * MIB, &mut buf).await.unwrap();
    assert_eq!(buf, [0u8; 4096]);
    // BACKWARD on a read is final.
    f.script(&[ChunkOpStatus::Backward]);
    assert_eq!(
        c.read(fd, 0, &mut buf).await.unwrap_err().code,
        ErrorCode::Failed
    );
}

#[tokio::test]
async fn retryable_statuses_retry_then_report_their_code() {
    for (status, code) in [
        (ChunkOpStatus::DiskFail, ErrorCode::DiskFail),
        (ChunkOpStatus::CrcFail, ErrorCode::CrcError),
        (ChunkOpStatus::FailureUnknown, ErrorCode::Failed),
        (ChunkOpStatus::CopysetNotexist, ErrorCode::NotExist),
        (ChunkOpStatus::Overload, ErrorCode::Failed),
        (ChunkOpStatus::Redirected, ErrorCode::Failed),
    ] {
        let (c, f) = setup(|_| {});
        let fd = opened(&c, &f).await;
        // Fails every one of the 5 tries (opMaxRetry = 5).
        f.script(&[status; 5]);
        let e = c.write(fd, 0, &[7u8; 4096]).await.unwrap_err();
        assert_eq!(e.code, code, "{status:?}: {e}");
        assert_eq!(f.chunk_calls().len(), 5, "{status:?}");
        // One failure less and the request succeeds.
        f.script(&[status; 4]);
        c.write(fd, 0, &[7u8; 4096]).await.unwrap();
    }
}

#[tokio::test]
async fn overload_backs_off_exponentially() {
    let (c, f) = setup(|conf| conf.chunkserver_op_max_retry = 10);
    let fd = opened(&c, &f).await;
    f.script(&[ChunkOpStatus::Overload; 6]);
    c.write(fd, 0, &[8u8; 4096]).await.unwrap();
    // The waits between the 7 tries: 10, 20, 40, 80, 160, 320 ms, each ±10 %. A wait is
    // never shorter than its sleep, so each gap's floor is checked exactly; a loaded
    // machine only lengthens gaps, so the first one's ceiling (which a constant or
    // capped backoff would break) has a wide margin.
    let times = f.0.lock().unwrap().chunk_call_times.clone();
    assert_eq!(times.len(), 7, "6 OVERLOADs and the success");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (k, gap) in gaps.iter().enumerate() {
        let floor = Duration::from_millis(9 << k); // 0.9 × 10 ms × 2^k
        assert!(
            *gap >= floor,
            "wait {k} was {gap:?}, under {floor:?}: {gaps:?}"
        );
    }
    assert!(
        gaps[0] < Duration::from_millis(150),
        "the first wait was {:?}, not about 10 ms: {gaps:?}",
        gaps[0]
    );
}

#[tokio::test]
async fn backward_adopts_the_new_sequence_number() {
    let (c, f) = setup(|_| {});
    let fd = opened(&c, &f).await;
    f.0.lock().unwrap().seq_num = 2;
    f.script(&[ChunkOpStatus::Backward]);
    c.write(fd, 0, &[9u8; 4096]).await.unwrap();
    let sns: Vec<Option<u64>> = f.chunk_calls().into_iter().map(|c| c.1.sn).collect();
    assert_eq!(sns, [Some(1), Some(2)]);
    assert_eq!(f.count("GetFileInfo"), 1);
}

#[tokio::test]
async fn the_io_deadline_bounds_retries() {
    let (c, f) = setup(|conf| {
        conf.chunkserver_op_max_retry = 1_000_000;
        conf.chunkserver_max_retry_time_ms = 300;
    });
    let fd = opened(&c, &f).await;
    f.script(&[ChunkOpStatus::FailureUnknown; 1000]);
    let start = Instant::now();
    let e = c.write(fd, 0, &[1u8; 4096]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Failed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn huge_budgets_in_the_conf_do_not_panic() {
    let (c, f) = setup(|conf| {
        conf.mds_rpc_timeout_ms = u64::MAX;
        conf.mds_max_rpc_timeout_ms = u64::MAX;
        conf.mds_max_retry_ms = u64::MAX;
        conf.mds_max_retry_ms_in_io_path = u64::MAX;
        conf.chunkserver_rpc_timeout_ms = u64::MAX;
        conf.chunkserver_max_rpc_timeout_ms = u64::MAX;
        conf.chunkserver_max_retry_time_ms = u64::MAX;
        conf.chunkserver_max_retry_sleep_interval_us = u64::MAX;
    });
    let fd = opened(&c, &f).await;
    f.script(&[ChunkOpStatus::Overload, ChunkOpStatus::FailureUnknown]);
    c.write(fd, 0, &[1u8; 4096]).await.unwrap();
    let mut buf = [0u8; 4096];
    c.read(fd, 0, &mut buf).await.unwrap();
    assert_eq!(buf, [1u8; 4096]);
    c.close(fd).await.unwrap();
}

/// A client whose lease is 200 ms, refreshed every 50 ms.
async fn short_lease() -> (Client, Fake, i32) {
    let (c, f) = setup(|conf| conf.chunkserver_max_retry_time_ms = 1000);
    f.0.lock().unwrap().lease_us = 200_000;
    let fd = opened(&c, &f).await;
    (c, f, fd)
}

#[tokio::test]
async fn refused_refresh_blocks_io_until_a_refresh_succeeds() {
    let (c, f, fd) = short_lease().await;
    f.0.lock().unwrap().refresh_status = Some(StatusCode::KOwnerAuthFail);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Blocked: waits for the IO's whole budget, then DISABLEIO.
    let start = Instant::now();
    let e = c.write(fd, 0, &[1u8; 4096]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::DisableIo, "{e}");
    assert!(start.elapsed() >= Duration::from_millis(900));
    // A later successful refresh releases IO that is waiting.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move { c.write(fd, 0, &[2u8; 4096]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.0.lock().unwrap().refresh_status = None;
    writer.await.unwrap().unwrap();
}

#[tokio::test]
async fn vanished_file_disables_io_at_once() {
    let (c, f, fd) = short_lease().await;
    f.0.lock().unwrap().refresh_status = Some(StatusCode::KFileNotExists);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let start = Instant::now();
    let e = c.write(fd, 0, &[1u8; 4096]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::DisableIo, "{e}");
    assert!(start.elapsed() < Duration::from_millis(100));
    // Refreshing stopped for good.
    let refreshes = f.count("RefreshSession");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.count("RefreshSession"), refreshes);
    c.close(fd).await.unwrap();
}

#[tokio::test]
async fn replaced_inode_disables_io() {
    let (c, f, fd) = short_lease().await;
    f.0.lock().unwrap().refresh_id = Some(43);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut buf = [0u8; 4096];
    let e = c.read(fd, 0, &mut buf).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::DisableIo, "{e}");
}

#[tokio::test]
async fn refresh_adopts_a_new_sequence_number() {
    let (c, f, fd) = short_lease().await;
    f.0.lock().unwrap().seq_num = 5;
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.script(&[]);
    c.write(fd, 0, &[1u8; 4096]).await.unwrap();
    assert_eq!(f.chunk_calls()[0].1.sn, Some(5));
}

#[tokio::test]
async fn segment_lookups_queued_behind_a_dead_mds_keep_their_own_budget() {
    let (c, f) = setup(|conf| {
        conf.mds_max_retry_ms_in_io_path = 300;
        conf.mds_rpc_retry_interval_us = 20_000;
    });
    let fd = opened(&c, &f).await;
    f.0.lock().unwrap().dead.insert(MDS.into());
    // Four writes into segment 1, not cached yet: one MDS lookup at a time, and each
    // must give up within mds.maxRetryMsInIOPath of its own start, not queue for
    // four budgets in a row.
    let start = Instant::now();
    let writes: Vec<_> = (0..4u64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.write(fd, 4 * MIB + i * 4096, &[1u8; 4096]).await })
        })
        .collect();
    for w in writes {
        let e = w.await.unwrap().unwrap_err();
        assert_eq!(e.code, ErrorCode::Failed, "{e}");
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(700), "{took:?}");
}

#[tokio::test]
async fn backward_without_a_newer_sequence_number_pauses_between_tries() {
    let (c, f) = setup(|conf| {
        conf.chunkserver_op_max_retry = 1_000_000;
        conf.chunkserver_max_retry_time_ms = 300;
    });
    let fd = opened(&c, &f).await;
    // The MDS keeps reporting sn 1: resending at once would only hammer both servers.
    f.script(&[ChunkOpStatus::Backward; 10_000]);
    let r = c.write(fd, 0, &[1u8; 4096]).await;
    let tries = f.chunk_calls().len();
    // 300 ms at opRetryIntervalUS = 10 ms.
    assert!((5..=40).contains(&tries), "{tries} tries");
    assert!(f.count("GetFileInfo") <= 40, "{}", f.count("GetFileInfo"));
    assert_eq!(r.unwrap_err().code, ErrorCode::Failed);
}

#[tokio::test]
async fn redirect_to_an_unknown_peer_asks_who_leads() {
    let (c, f) = setup(|_| {});
    let fd = opened(&c, &f).await;
    {
        let mut s = f.0.lock().unwrap();
        // A hint the client cannot use (not a member it knows): it must ask the peers
        // instead of resending to the node that just refused.
        s.redirect = Some("10.9.9.9:8200:0".into());
        s.leader = format!("{}:0", CS[1]);
    }
    f.script(&[ChunkOpStatus::Redirected]);
    c.write(fd, 0, &[4u8; 4096]).await.unwrap();
    let eps: Vec<String> = f.chunk_calls().into_iter().map(|c| c.0).collect();
    assert_eq!(eps, [CS[0], CS[1]]);
    assert!(f.count("GetLeader") >= 1);
}

#[tokio::test]
async fn read_reply_of_the_wrong_length_is_an_error_not_a_partial_copy() {
    let (c, f) = setup(|_| {});
    let fd = opened(&c, &f).await;
    for n in [0, 4095, 4097, 8192] {
        f.0.lock().unwrap().read_len = Some(n);
        f.script(&[]);
        let mut buf = [7u8; 4096];
        let e = c.read(fd, 0, &mut buf).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Failed, "{n}: {e}");
        assert_eq!(buf, [7u8; 4096], "{n}: the caller's buffer was written");
        // opMaxRetry = 5: retried like any failed try, never accepted.
        assert_eq!(f.chunk_calls().len(), 5, "{n}");
    }
    f.0.lock().unwrap().read_len = None;
    let mut buf = [7u8; 4096];
    c.read(fd, 0, &mut buf).await.unwrap();
    assert_eq!(buf, [1u8; 4096]);
}
