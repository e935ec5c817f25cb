//! The chunkserver's services over brpc's baidu_std, as stock chunkservers serve them:
//! WriteChunk's data is the request attachment and ReadChunk's the response attachment;
//! GetLeader fails with ENOENT (copyset not hosted) or EAGAIN (no leader known), and
//! TransferLeader with ENOENT, EPERM (not the leader) or EINVAL (not a member).
//! CreateCloneChunk and RecoverChunk carry no data either way. The same
//! handlers as the gRPC face run underneath. The members of a copyset's Raft group send
//! each other Raft's RPCs here too (`curvefs.local.RaftService`, raft_net.rs).

use std::sync::Arc;

use bytes::Bytes;
use curve_brpc::server::unary;
use curve_brpc::{Dispatch, Request, Response, RpcError, errors};
use curve_proto::chunkserver::{
    ChunkRequest, GetChunkInfoRequest, GetChunkInfoResponse, GetLeaderRequest2,
    TransferLeaderRequest2, UpdateEpochRequest, UpdateEpochResponse,
};
use curve_proto::local::{IdentifyRequest, IdentifyResponse};
use futures::future::BoxFuture;
use prost::Message;

use crate::raft_net::{RAFT_SERVICE, RaftRpc, RaftRpcReply};
use crate::service::{CliRefusal, Node};

const CHUNK_SERVICE: &str = "curve.chunkserver.ChunkService";
const CLI_SERVICE2: &str = "curve.chunkserver.CliService2";
const LOCAL_CHUNK_SERVER: &str = "curvefs.local.LocalChunkServer";

pub(crate) struct BaiduStd(pub Arc<Node>);

fn cli_error(refusal: CliRefusal) -> RpcError {
    let (code, message) = refusal.errno();
    RpcError::new(code, message)
}

fn decode_chunk_request(payload: Bytes) -> Result<ChunkRequest, RpcError> {
    ChunkRequest::decode(payload)
        .map_err(|e| RpcError::new(errors::EREQUEST, format!("cannot parse ChunkRequest: {e}")))
}

impl Dispatch for BaiduStd {
    fn call(&self, r: Request) -> BoxFuture<'static, Result<Response, RpcError>> {
        let node = self.0.clone();
        Box::pin(async move {
            match (r.service.as_str(), r.method.as_str()) {
                (CHUNK_SERVICE, "WriteChunk") => {
                    let mut req = decode_chunk_request(r.payload)?;
                    // The data is the attachment, as on a stock chunkserver; field 1000
                    // belongs to gRPC and is not looked at here.
                    req.attachment = Some(r.attachment);
                    let resp = node.write_to_the_end(req).await;
                    Ok(Response {
                        payload: Bytes::from(resp.encode_to_vec()),
                        attachment: Bytes::new(),
                    })
                }
                (CHUNK_SERVICE, method @ ("ReadChunk" | "ReadChunkSnapshot")) => {
                    let req = decode_chunk_request(r.payload)?;
                    let mut resp = if method == "ReadChunkSnapshot" {
                        node.read_snapshot(req).await
                    } else {
                        node.read(req).await
                    };
                    let data = resp.attachment.take().unwrap_or_default();
                    Ok(Response {
                        payload: Bytes::from(resp.encode_to_vec()),
                        attachment: data,
                    })
                }
                (
                    CHUNK_SERVICE,
                    method @ ("CreateCloneChunk"
                    | "RecoverChunk"
                    | "DeleteChunkSnapshotOrCorrectSn"),
                ) => {
                    let req = decode_chunk_request(r.payload)?;
                    let resp = match method {
                        "RecoverChunk" => node.recover_to_the_end(req).await,
                        "CreateCloneChunk" => node.create_clone_to_the_end(req).await,
                        _ => node.delete_chunk_snapshot_to_the_end(req).await,
                    };
                    Ok(Response {
                        payload: Bytes::from(resp.encode_to_vec()),
                        attachment: Bytes::new(),
                    })
                }
                (CHUNK_SERVICE, "GetChunkInfo") => {
                    unary(r.payload, |req: GetChunkInfoRequest| async move {
                        Ok::<GetChunkInfoResponse, _>(node.chunk_info(req))
                    })
                    .await
                }
                (CHUNK_SERVICE, "UpdateEpoch") => {
                    unary(r.payload, |req: UpdateEpochRequest| async move {
                        Ok::<UpdateEpochResponse, _>(node.update_epoch(req))
                    })
                    .await
                }
                (CHUNK_SERVICE, m) => Err(RpcError::no_method(CHUNK_SERVICE, m)),
                (CLI_SERVICE2, "GetLeader") => {
                    unary(r.payload, |req: GetLeaderRequest2| async move {
                        node.get_leader(&req).map_err(cli_error)
                    })
                    .await
                }
                (CLI_SERVICE2, "TransferLeader") => {
                    unary(r.payload, |req: TransferLeaderRequest2| async move {
                        node.transfer_leader(&req).await.map_err(cli_error)
                    })
                    .await
                }
                (CLI_SERVICE2, m) => Err(RpcError::no_method(CLI_SERVICE2, m)),
                (LOCAL_CHUNK_SERVER, "Identify") => {
                    unary(r.payload, |_: IdentifyRequest| async move {
                        Ok::<IdentifyResponse, _>(node.identify())
                    })
                    .await
                }
                (RAFT_SERVICE, _) => {
                    let (pool, copyset, rpc): (u32, u32, RaftRpc) =
                        bincode::deserialize(&r.payload).map_err(|e| {
                            RpcError::new(errors::EREQUEST, format!("cannot parse a Raft RPC: {e}"))
                        })?;
                    let answer: Result<RaftRpcReply, String> = match node.raft_group(pool, copyset)
                    {
                        Some(group) => group.serve_rpc(rpc).await,
                        None => Err(format!("copyset {pool}-{copyset} is not hosted here")),
                    };
                    let payload = bincode::serialize(&answer).map_err(|e| {
                        RpcError::new(
                            errors::EINTERNAL,
                            format!("cannot encode a Raft answer: {e}"),
                        )
                    })?;
                    Ok(Response {
                        payload: Bytes::from(payload),
                        attachment: Bytes::new(),
                    })
                }
                (s, _) => Err(RpcError::no_service(s)),
            }
        })
    }
}
