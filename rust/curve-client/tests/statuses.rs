//! The chunk answers `scripted.rs` feeds the client, checked against the real local
//! chunkservers over both wires. For every status a real chunkserver gives on demand —
//! REDIRECTED (from a follower, without a hint: the local cluster gives none, as
//! upstream's braft followers), COPYSET_NOTEXIST, CHUNK_NOTEXIST, BACKWARD, EPOCH_TOO_OLD,
//! INVALID_REQUEST, and SUCCESS with the data — the reply has the shape the scripted fake
//! gives for it (status, redirect hint or none, data or none), so the retry rules
//! `scripted.rs` tests are rules for answers that exist. OVERLOAD, CRC_FAIL, NOSPACE,
//! DISK_FAIL and CHUNK_EXIST cannot be provoked from outside a healthy local chunkserver and
//! stay covered by the script alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use curve_client::transport::{
    self, BaiduStdTransport, GrpcTransport, RpcMethod, Transport, methods,
};
use curve_proto::chunkserver::{
    ChunkOpStatus, ChunkOpType, ChunkRequest, ChunkResponse, GetLeaderRequest2, GetLeaderResponse2,
    UpdateEpochRequest, UpdateEpochResponse,
};

const DEADLINE: Duration = Duration::from_secs(10);
const UPDATE_EPOCH: RpcMethod = RpcMethod::new(methods::CHUNK_SERVICE, "UpdateEpoch");

/// What the client's rules look at in a chunk reply: the status, the redirect hint, and
/// whether data came back. (A real BACKWARD also carries `chunk_sn`, which the scripted
/// fake leaves out; the client does not read it, it asks the MDS for the file's sn.)
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    status: ChunkOpStatus,
    redirect: Option<String>,
    data: bool,
}

/// The shape of the scripted fake's answer for `status` (scripted.rs `Fake::answer`) when
/// it has no redirect hint set: data only with SUCCESS on a read.
fn scripted(status: ChunkOpStatus, read: bool) -> Shape {
    Shape {
        status,
        redirect: None,
        data: read && status == ChunkOpStatus::Success,
    }
}

fn request(op: ChunkOpType, copyset_id: u32, chunk_id: u64, size: u32, sn: u64) -> ChunkRequest {
    ChunkRequest {
        op_type: op as i32,
        logic_pool_id: 1,
        copyset_id,
        chunk_id,
        offset: Some(0),
        size: Some(size),
        sn: Some(sn),
        file_id: Some(1),
        ..Default::default()
    }
}

async fn call(
    wire: &dyn Transport,
    addr: &str,
    req: &ChunkRequest,
    data: &[u8],
) -> (Shape, ChunkResponse, Bytes) {
    let (method, attachment) = if req.op_type == ChunkOpType::ChunkOpWrite as i32 {
        (methods::WRITE_CHUNK, Bytes::copy_from_slice(data))
    } else {
        (methods::READ_CHUNK, Bytes::new())
    };
    let (resp, got): (ChunkResponse, Bytes) =
        transport::unary_with_attachment(wire, addr, &method, req, attachment, DEADLINE)
            .await
            .unwrap();
    // The gRPC wire may carry the data in the message rather than beside it.
    let got = if got.is_empty() {
        resp.attachment.clone().unwrap_or_default()
    } else {
        got
    };
    let shape = Shape {
        status: ChunkOpStatus::try_from(resp.status).unwrap(),
        redirect: resp.redirect.clone(),
        data: !got.is_empty(),
    };
    (shape, resp, got)
}

/// `call` at the copyset's leader, whichever member that is now: a leader under load
/// can lose its lease for a moment (no majority answered it within 1.5 s) or its
/// leadership, and answer REDIRECTED without a hint, as upstream's do; the client then
/// asks the members again, and so does this, within 20 s.
async fn at_leader(
    cluster: &Cluster,
    wire: &dyn Transport,
    req: &ChunkRequest,
    data: &[u8],
) -> (Shape, ChunkResponse, Bytes) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut at = 0;
    loop {
        let addr = cluster.cs_addrs[at % 3].to_string();
        let answer = call(wire, &addr, req, data).await;
        if answer.0.status != ChunkOpStatus::Redirected || Instant::now() > deadline {
            return answer;
        }
        at += 1;
        if at % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The index of the chunkserver that leads `copyset_id`: one every member names and that
/// names itself.
async fn leader(cluster: &Cluster, wire: &dyn Transport, copyset_id: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut named = Vec::new();
        for addr in &cluster.cs_addrs {
            let req = GetLeaderRequest2 {
                logic_pool_id: 1,
                copyset_id,
                peer: None,
            };
            let resp: Option<GetLeaderResponse2> = transport::unary(
                wire,
                &addr.to_string(),
                &methods::GET_LEADER,
                &req,
                DEADLINE,
            )
            .await
            .ok();
            named.push(resp.and_then(|r| r.leader.address));
        }
        let agreed = cluster.cs_addrs.iter().position(|a| {
            named
                .iter()
                .all(|n| n.as_deref() == Some(&format!("{a}:0")))
        });
        if let Some(i) = agreed {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "copyset {copyset_id}: no agreed leader in 20 s: {named:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_chunkservers_give_the_answers_the_script_gives() {
    use ChunkOpStatus as S;
    use ChunkOpType::{ChunkOpRead as Read, ChunkOpWrite as Write};
    let cluster = Cluster::start().await;
    let wires: [(&str, Box<dyn Transport>); 2] = [
        (
            "baidu_std",
            Box::new(BaiduStdTransport::new(DEADLINE, 64 << 20)),
        ),
        ("grpc", Box::new(GrpcTransport::new(DEADLINE, 1))),
    ];
    let data = pattern(7, 4096);
    for (k, (name, wire)) in wires.iter().enumerate() {
        let wire = wire.as_ref();
        let copyset = 1;
        let at = leader(&cluster, wire, copyset).await;
        let follower_addr = cluster.cs_addrs[(at + 1) % 3].to_string();
        // Chunks of this wire's own, so the two rounds do not meet.
        let chunk = 1000 + 10 * k as u64;

        let (got, _, _) = at_leader(
            &cluster,
            wire,
            &request(Write, copyset, chunk, 4096, 1),
            &data,
        )
        .await;
        assert_eq!(
            got,
            scripted(S::Success, false),
            "{name}: a write at the leader"
        );
        let (got, _, bytes) =
            at_leader(&cluster, wire, &request(Read, copyset, chunk, 4096, 1), &[]).await;
        assert_eq!(
            got,
            scripted(S::Success, true),
            "{name}: a read at the leader"
        );
        assert!(bytes == data, "{name}: the read returned other bytes");

        let write = request(Write, copyset, chunk, 4096, 1);
        let (got, _, _) = call(wire, &follower_addr, &write, &data).await;
        assert_eq!(
            got,
            scripted(S::Redirected, false),
            "{name}: a write at a follower"
        );
        let (got, _, _) = call(
            wire,
            &follower_addr,
            &request(Read, copyset, chunk, 4096, 1),
            &[],
        )
        .await;
        assert_eq!(
            got,
            scripted(S::Redirected, true),
            "{name}: a read at a follower"
        );

        let (got, _, _) =
            at_leader(&cluster, wire, &request(Write, 99, chunk, 4096, 1), &data).await;
        assert_eq!(
            got,
            scripted(S::CopysetNotexist, false),
            "{name}: no such copyset"
        );

        let (got, _, _) = at_leader(
            &cluster,
            wire,
            &request(Read, copyset, chunk + 1, 4096, 1),
            &[],
        )
        .await;
        assert_eq!(
            got,
            scripted(S::ChunkNotexist, true),
            "{name}: a chunk never written"
        );

        // An older sequence number than the chunk's (raised by a write with sn 3).
        let (got, _, _) = at_leader(
            &cluster,
            wire,
            &request(Write, copyset, chunk, 4096, 3),
            &data,
        )
        .await;
        assert_eq!(got.status, S::Success, "{name}: a write with sn 3");
        let (got, resp, _) = at_leader(
            &cluster,
            wire,
            &request(Write, copyset, chunk, 4096, 1),
            &data,
        )
        .await;
        assert_eq!(
            got,
            scripted(S::Backward, false),
            "{name}: a write with sn 1 after 3"
        );
        assert_eq!(
            resp.chunk_sn,
            Some(3),
            "{name}: BACKWARD names the chunk's sn"
        );

        // A file's epoch raised by UpdateEpoch (on every member, as upstream sends it): a
        // write carrying the old one is refused.
        let file_id = 70 + k as u64;
        for addr in &cluster.cs_addrs {
            let raised: UpdateEpochResponse = transport::unary(
                wire,
                &addr.to_string(),
                &UPDATE_EPOCH,
                &UpdateEpochRequest { file_id, epoch: 2 },
                DEADLINE,
            )
            .await
            .unwrap();
            assert_eq!(
                raised.status,
                S::Success as i32,
                "{name}: UpdateEpoch at {addr}"
            );
        }
        let mut stale = request(Write, copyset, chunk + 2, 4096, 1);
        stale.file_id = Some(file_id);
        stale.epoch = Some(1);
        let (got, _, _) = at_leader(&cluster, wire, &stale, &data).await;
        assert_eq!(
            got,
            scripted(S::EpochTooOld, false),
            "{name}: a write with epoch 1 < 2"
        );

        // Fewer bytes than the request says.
        let (got, _, _) = at_leader(
            &cluster,
            wire,
            &request(Write, copyset, chunk + 3, 4096, 1),
            &data[..100],
        )
        .await;
        assert_eq!(
            got,
            scripted(S::InvalidRequest, false),
            "{name}: a short write"
        );
    }
}
