//! The copysets' Raft replication seen from outside: writes to the same bytes applied in
//! the order they were sent, a paused leader that neither reads nor writes once it is
//! replaced, and a Jepsen-style history under faults checked for linearizability per
//! block, with every replica's chunk files identical at the end.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use curve_brpc::{Channel, DEFAULT_MAX_BODY};
use curve_proto::chunkserver::{
    ChunkOpStatus, ChunkRequest, ChunkResponse, TransferLeaderRequest2,
};
use curve_proto::common::Peer;
use prost::Message;
use rand::Rng;

const CHUNK_SERVICE: &str = "curve.chunkserver.ChunkService";

fn status(code: i32) -> ChunkOpStatus {
    ChunkOpStatus::try_from(code).unwrap_or(ChunkOpStatus::FailureUnknown)
}

/// Sends `req` over baidu_std with its data as the attachment.
async fn call_chunk(
    ch: &Channel,
    method: &str,
    mut req: ChunkRequest,
    timeout: Duration,
) -> Result<(ChunkResponse, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let data = req.attachment.take().unwrap_or_default();
    let reply = ch
        .call(
            CHUNK_SERVICE,
            method,
            Bytes::from(req.encode_to_vec()),
            data,
            timeout,
        )
        .await?;
    Ok((ChunkResponse::decode(reply.payload)?, reply.attachment))
}

/// The old protocol's follower applied a frame larger than 256 KiB on the blocking pool
/// while it applied the next one inline, so an older big write could land over a newer
/// small one. Through Raft every write is an entry applied in log order: an older and a
/// newer write to the same bytes, pipelined on one connection to the leader in each size
/// class around that limit, end with the newer bytes on every replica, 200 rounds each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_overlapping_writes_land_in_the_order_sent() -> TestResult {
    let cluster = Cluster::start().await?;
    let ch = Channel::connect(&cluster.addr(0), Duration::from_secs(1), DEFAULT_MAX_BODY).await?;
    let timeout = Duration::from_secs(10);
    let newer_len = 16 * 1024;
    let rounds = std::env::var("CURVEFS_REORDER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200u32);
    for (class, older_len) in [252usize, 256, 260, 1024].into_iter().enumerate() {
        let older_len = older_len * 1024;
        let chunk_id = 300 + class as u64;
        for round in 0..rounds {
            let seed = (round % 250) as u8;
            let older = pattern(older_len, seed);
            let newer = pattern(newer_len, seed.wrapping_add(1));
            let a = call_chunk(
                &ch,
                "WriteChunk",
                write_request(CS_A, chunk_id, 0, older.clone(), 1),
                timeout,
            );
            let b = call_chunk(
                &ch,
                "WriteChunk",
                write_request(CS_A, chunk_id, 0, newer.clone(), 1),
                timeout,
            );
            let (a, b) = futures::join!(a, b);
            assert_eq!(status(a?.0.status), ChunkOpStatus::Success);
            assert_eq!(status(b?.0.status), ChunkOpStatus::Success);
            let (resp, got) = call_chunk(
                &ch,
                "ReadChunk",
                read_request(CS_A, chunk_id, 0, older_len as u32),
                timeout,
            )
            .await?;
            assert_eq!(status(resp.status), ChunkOpStatus::Success);
            let mut expected = older;
            expected[..newer_len].copy_from_slice(&newer);
            assert!(
                got[..] == expected[..],
                "{older_len} B then {newer_len} B, round {round}: the older bytes won on the leader"
            );
            if round + 1 == rounds {
                for i in 0..3 {
                    let path = cluster.chunk_path(i, CS_A, chunk_id);
                    let held = on_disk_eventually(&path, 0, older_len, &expected).await?;
                    assert!(
                        held == expected,
                        "replica {i} of chunk {chunk_id} differs from the leader"
                    );
                }
            }
        }
    }
    Ok(())
}

/// A leader frozen (as by SIGSTOP) is replaced; clients go on at the new leader; and
/// when it runs again, a read and a write that waited in its socket all along get no
/// success: the read is not served from its stale copy, the write lands nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_once_resumed_neither_reads_nor_writes() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let timeout = Duration::from_secs(30);
    let old = Channel::connect(&cluster.addr(0), Duration::from_secs(1), DEFAULT_MAX_BODY).await?;
    let first = pattern(4096, 1);
    let (resp, _) = call_chunk(
        &old,
        "WriteChunk",
        write_request(CS_A, 400, 0, first.clone(), 1),
        timeout,
    )
    .await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    cluster.pause(0);
    // Sent now, they wait in the paused leader's socket.
    let stale_read = tokio::spawn({
        let old = Arc::new(old);
        let reader = old.clone();
        let writer = old;
        let read = async move {
            call_chunk(
                &reader,
                "ReadChunk",
                read_request(CS_A, 400, 0, 4096),
                Duration::from_secs(60),
            )
            .await
            .map(|(r, data)| (status(r.status), data))
            .map_err(|e| e.to_string())
        };
        let write = async move {
            call_chunk(
                &writer,
                "WriteChunk",
                write_request(CS_A, 400, 0, pattern(4096, 9), 1),
                Duration::from_secs(60),
            )
            .await
            .map(|(r, _)| status(r.status))
            .map_err(|e| e.to_string())
        };
        async move { futures::join!(read, write) }
    });
    let started = Instant::now();
    let leader = cluster.leader_among(CS_A, &[1, 2]).await?;
    let newer = pattern(4096, 2);
    let new = Channel::connect(
        &cluster.addr(leader),
        Duration::from_secs(1),
        DEFAULT_MAX_BODY,
    )
    .await?;
    loop {
        let (resp, _) = call_chunk(
            &new,
            "WriteChunk",
            write_request(CS_A, 400, 0, newer.clone(), 1),
            timeout,
        )
        .await?;
        if status(resp.status) == ChunkOpStatus::Success {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "writes did not resume at the new leader: {:?}",
            status(resp.status)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("writes resumed {:?} after the pause", started.elapsed());
    cluster.resume(0);
    let (read, write) = stale_read.await?;
    let (read_status, read_data) = read?;
    assert_ne!(
        (read_status, &read_data[..]),
        (ChunkOpStatus::Success, &first[..]),
        "the resumed old leader served its stale copy"
    );
    assert_ne!(
        read_status,
        ChunkOpStatus::Success,
        "the resumed old leader served a read"
    );
    assert_ne!(
        write?,
        ChunkOpStatus::Success,
        "the resumed old leader took a write"
    );
    // The old leader rejoins as a follower and every replica holds the newer bytes.
    for i in 0..3 {
        let path = cluster.chunk_path(i, CS_A, 400);
        assert!(
            on_disk_eventually(&path, 0, 4096, &newer).await? == newer,
            "replica {i} does not hold the newer write"
        );
    }
    Ok(())
}

/// One operation of the history.
#[derive(Debug, Clone)]
struct Op {
    block: usize,
    /// The value written (a write) or read (a read; 0: never written).
    value: u64,
    write: bool,
    start: Instant,
    /// `None`: a write whose outcome is unknown (it may have taken effect, any time).
    end: Option<Instant>,
}

/// Per-block register checks: a read returns a value some write started before the read
/// ended; never a value overwritten by a write that completed, after that value's write
/// completed, before the read began; and reads in real-time order never go back in the
/// order of completed writes.
fn check_history(ops: &[Op]) -> Result<(), String> {
    let mut by_block: HashMap<usize, Vec<&Op>> = HashMap::new();
    for op in ops {
        by_block.entry(op.block).or_default().push(op);
    }
    for (block, ops) in by_block {
        let writes: HashMap<u64, &Op> = ops
            .iter()
            .filter(|o| o.write)
            .map(|o| (o.value, *o))
            .collect();
        let reads: Vec<&Op> = ops.iter().filter(|o| !o.write).copied().collect();
        for r in &reads {
            let r_end = r.end.ok_or("a read without an end")?;
            if r.value == 0 {
                if let Some(w) = writes.values().find(|w| w.end.is_some_and(|e| e < r.start)) {
                    return Err(format!(
                        "block {block}: a read saw nothing after write {} completed",
                        w.value
                    ));
                }
                continue;
            }
            let Some(w) = writes.get(&r.value) else {
                return Err(format!(
                    "block {block}: read value {} never written",
                    r.value
                ));
            };
            if w.start > r_end {
                return Err(format!(
                    "block {block}: read {} before its write began",
                    r.value
                ));
            }
            if let Some(w_end) = w.end
                && let Some(newer) = writes
                    .values()
                    .find(|o| o.start > w_end && o.end.is_some_and(|e| e < r.start))
            {
                return Err(format!(
                    "block {block}: stale read of {} after {} was written over it",
                    r.value, newer.value
                ));
            }
        }
        for r1 in &reads {
            for r2 in &reads {
                let (Some(e1), Some(w1), Some(w2)) =
                    (r1.end, writes.get(&r1.value), writes.get(&r2.value))
                else {
                    continue;
                };
                if e1 < r2.start && w2.end.is_some_and(|e| e < w1.start) {
                    return Err(format!(
                        "block {block}: read {} after read {} went back in time",
                        r2.value, r1.value
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A client that finds the leader itself (GetLeader at any member) and retries through
/// redirects, failures and dead members until `OP_DEADLINE`.
struct Client {
    addrs: Vec<String>,
    leader: HashMap<u32, usize>,
    channels: HashMap<usize, Channel>,
}

const OP_DEADLINE: Duration = Duration::from_secs(12);
const RPC: Duration = Duration::from_millis(1500);

impl Client {
    async fn channel(&mut self, i: usize) -> Option<&Channel> {
        let usable = self.channels.get(&i).is_some_and(Channel::is_usable);
        if !usable {
            let ch = Channel::connect(&self.addrs[i], Duration::from_millis(300), DEFAULT_MAX_BODY)
                .await
                .ok()?;
            self.channels.insert(i, ch);
        }
        self.channels.get(&i)
    }

    async fn call(
        &mut self,
        copyset: u32,
        method: &str,
        req: ChunkRequest,
    ) -> Option<(ChunkResponse, Bytes)> {
        let until = Instant::now() + OP_DEADLINE;
        while Instant::now() < until {
            let guess = rand::thread_rng().gen_range(0..3);
            let target = *self.leader.entry(copyset).or_insert(guess);
            let answer = match self.channel(target).await {
                Some(ch) => call_chunk(ch, method, req.clone(), RPC).await.ok(),
                None => None,
            };
            match answer {
                Some((resp, data)) if status(resp.status) == ChunkOpStatus::Success => {
                    return Some((resp, data));
                }
                Some((resp, _)) if status(resp.status) == ChunkOpStatus::ChunkNotexist => {
                    return Some((resp, Bytes::new()));
                }
                _ => {
                    // Redirected, failed or unreachable: another member next time.
                    self.leader
                        .insert(copyset, rand::thread_rng().gen_range(0..3));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        None
    }
}

/// A block's bytes for value `v`: `v` little-endian, repeated.
fn block_of(v: u64) -> Vec<u8> {
    v.to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(BLOCK_SIZE as usize)
        .collect()
}

fn value_of(data: &[u8]) -> Option<u64> {
    let first: [u8; 8] = data.get(..8)?.try_into().ok()?;
    data.chunks(8)
        .all(|c| c == first)
        .then(|| u64::from_le_bytes(first))
}

/// Concurrent single-block writes and reads from several clients while members are
/// killed and restarted, paused and resumed, cut off through a proxy and leaders are
/// transferred. Every read must be linearizable per block, and at the end every replica
/// of each copyset holds identical chunk files. `CURVEFS_JEPSEN_SECS` runs it longer
/// (CI: 12 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_under_faults_is_linearizable_and_replicas_end_identical() -> TestResult {
    let secs = std::env::var("CURVEFS_JEPSEN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12u64);
    let (cluster, proxy) = Cluster::start_with_proxy(2).await?;
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let addrs: Vec<String> = {
        let c = cluster.lock().await;
        (0..3).map(|i| c.addr(i)).collect()
    };
    const BLOCKS: usize = 8;
    // Blocks 0..4 in CS_A's chunk 500, 4..8 in CS_B's chunk 501.
    let place = |block: usize| -> (u32, u64, u32) {
        if block < BLOCKS / 2 {
            (CS_A, 500, (block as u32) * BLOCK_SIZE)
        } else {
            (CS_B, 501, ((block - BLOCKS / 2) as u32) * BLOCK_SIZE)
        }
    };
    let history = Arc::new(Mutex::new(Vec::<Op>::new()));
    let next_value = Arc::new(AtomicU64::new(1));
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let history = history.clone();
        let next_value = next_value.clone();
        let addrs = addrs.clone();
        clients.push(tokio::spawn(async move {
            let mut client = Client {
                addrs,
                leader: HashMap::new(),
                channels: HashMap::new(),
            };
            while Instant::now() < stop_at {
                let (block, write) = {
                    let mut rng = rand::thread_rng();
                    (rng.gen_range(0..BLOCKS), rng.gen_bool(0.5))
                };
                let (copyset, chunk, offset) = place(block);
                let start = Instant::now();
                if write {
                    let value = next_value.fetch_add(1, Ordering::Relaxed);
                    let req = write_request(copyset, chunk, offset, block_of(value), 1);
                    let done = client.call(copyset, "WriteChunk", req).await;
                    let end = done.is_some().then(Instant::now);
                    history
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Op {
                            block,
                            value,
                            write: true,
                            start,
                            end,
                        });
                } else {
                    let req = read_request(copyset, chunk, offset, BLOCK_SIZE);
                    let Some((resp, data)) = client.call(copyset, "ReadChunk", req).await else {
                        continue;
                    };
                    let value = if status(resp.status) == ChunkOpStatus::ChunkNotexist {
                        Some(0)
                    } else {
                        value_of(&data)
                    };
                    let Some(value) = value else {
                        return Err(format!("block {block}: a torn read"));
                    };
                    history
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Op {
                            block,
                            value,
                            write: false,
                            start,
                            end: Some(Instant::now()),
                        });
                }
            }
            Ok::<(), String>(())
        }));
    }
    // The nemesis: one fault at a time, healed before the next.
    let mut faults = Vec::new();
    let mut round = 0usize;
    while Instant::now() + Duration::from_secs(3) < stop_at {
        let victim = round % 3;
        let kind = round % 4;
        round += 1;
        {
            let mut c = cluster.lock().await;
            match kind {
                0 => {
                    c.kill(victim);
                    faults.push(format!("kill {victim}"));
                }
                1 => {
                    c.pause(victim);
                    faults.push(format!("pause {victim}"));
                }
                2 => {
                    proxy.cut();
                    faults.push("cut 2".to_string());
                }
                _ => {
                    let to = victim;
                    let leader = c.leader_among(CS_A, &[0, 1, 2]).await.ok();
                    if let Some(leader) = leader {
                        let mut cli = c.cli_client(leader).await?;
                        let _ = cli
                            .transfer_leader(TransferLeaderRequest2 {
                                logic_pool_id: POOL,
                                copyset_id: CS_A,
                                leader: Peer {
                                    id: None,
                                    address: Some(format!("{}:0", c.addr(leader))),
                                },
                                transferee: Peer {
                                    id: None,
                                    address: Some(format!("{}:0", c.addr(to))),
                                },
                            })
                            .await;
                        faults.push(format!("transfer {leader}->{to}"));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let mut c = cluster.lock().await;
        match kind {
            0 => c.restart(victim)?,
            1 => c.resume(victim),
            2 => proxy.restore(),
            _ => {}
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for client in clients {
        client.await??;
    }
    let ops = history
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let (writes, reads) = ops.iter().fold(
        (0, 0),
        |(w, r), o| {
            if o.write { (w + 1, r) } else { (w, r + 1) }
        },
    );
    eprintln!("history: {writes} writes, {reads} reads; faults: {faults:?}");
    assert!(
        writes > 20 && reads > 20,
        "too little history: {writes} writes, {reads} reads"
    );
    check_history(&ops)?;
    // Every replica converges to the same chunk files.
    let c = cluster.lock().await;
    for (copyset, chunk) in [(CS_A, 500u64), (CS_B, 501)] {
        let len = (BLOCKS / 2) * BLOCK_SIZE as usize;
        let reference = c.chunk_path(0, copyset, chunk);
        eventually(&format!("replicas of chunk {chunk} identical"), || {
            let first = on_disk(&reference, 0, len)?;
            Ok((1..3).all(|i| {
                on_disk(&c.chunk_path(i, copyset, chunk), 0, len).ok() == Some(first.clone())
            }))
        })
        .await?;
        for suffix in ["", ".sn"] {
            // A file no replica has (no sn recorded) is alike on all.
            let read = |i: usize| {
                let mut path = c.chunk_path(i, copyset, chunk).into_os_string();
                path.push(suffix);
                std::fs::read(path).ok()
            };
            let first = read(0);
            assert!(
                suffix == ".sn" || first.is_some(),
                "chunk {chunk} missing on replica 0"
            );
            for i in 1..3 {
                assert!(
                    read(i) == first,
                    "chunk {chunk}{suffix}: replica {i} differs from replica 0"
                );
            }
        }
    }
    Ok(())
}

/// The checker itself: it passes a serial history and fails a stale read, a read of a
/// value never written and reads going back in time.
#[test]
fn history_checker_finds_stale_and_invented_reads() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let op = |value, write, start, end| Op {
        block: 0,
        value,
        write,
        start: at(start),
        end: Some(at(end)),
    };
    let serial = [
        op(1, true, 0, 10),
        op(1, false, 20, 30),
        op(2, true, 40, 50),
        op(2, false, 60, 70),
    ];
    assert!(check_history(&serial).is_ok());
    let stale = [
        op(1, true, 0, 10),
        op(2, true, 20, 30),
        op(1, false, 40, 50),
    ];
    assert!(check_history(&stale).is_err());
    let invented = [op(1, true, 0, 10), op(7, false, 20, 30)];
    assert!(check_history(&invented).is_err());
    let lost = [op(1, true, 0, 10), op(0, false, 20, 30)];
    assert!(check_history(&lost).is_err());
    let back = [
        op(1, true, 0, 10),
        op(2, true, 20, 30),
        op(2, false, 25, 35),
        op(1, false, 22, 28),
        op(1, false, 40, 45),
    ];
    assert!(check_history(&back).is_err());
    // A write of unknown outcome may take effect late.
    let late = [
        Op {
            end: None,
            ..op(1, true, 0, 0)
        },
        op(2, true, 5, 10),
        op(1, false, 20, 30),
    ];
    assert!(check_history(&late).is_ok());
}
