//! The one narrow RPC interface of the client core and its implementations.
//!
//! Everything above this module speaks in encoded protobuf messages plus an optional
//! attachment (chunk data), so the MDS client and the chunk path do not know which wire
//! carries them:
//! - [`baidu_std`]: brpc's own protocol, what stock Curve servers speak; the attachment
//!   travels as the brpc attachment. The default for every peer.
//! - [`grpc`]: tonic; the attachment rides in field 1000 of the chunk messages, which only
//!   curvefs's local chunkservers understand.
//! - [`route`]: picks one of the two per peer kind (`mds.transport`,
//!   `chunkserver.transport`) and guards gRPC chunk calls: a chunkserver that does not
//!   prove it is a curvefs local one never receives a chunk request over gRPC, because a
//!   stock chunkserver would take the data as missing and abort.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

pub mod baidu_std;
pub mod grpc;
pub mod route;

pub use baidu_std::BaiduStdTransport;
pub use grpc::GrpcTransport;
pub use route::RoutedTransport;

/// A method of a Curve service: the full service name (with package) and the method name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RpcMethod {
    pub service: &'static str,
    pub method: &'static str,
}

impl RpcMethod {
    pub const fn new(service: &'static str, method: &'static str) -> Self {
        Self { service, method }
    }
}

/// The methods the client calls.
pub mod methods {
    use super::RpcMethod;

    pub const CURVEFS_SERVICE: &str = "curve.mds.CurveFSService";
    pub const TOPOLOGY_SERVICE: &str = "curve.mds.topology.TopologyService";
    pub const CHUNK_SERVICE: &str = "curve.chunkserver.ChunkService";
    pub const CLI_SERVICE2: &str = "curve.chunkserver.CliService2";

    pub const CREATE_FILE: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "CreateFile");
    pub const DELETE_FILE: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "DeleteFile");
    pub const RECOVER_FILE: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "RecoverFile");
    pub const GET_FILE_INFO: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "GetFileInfo");
    pub const GET_OR_ALLOCATE_SEGMENT: RpcMethod =
        RpcMethod::new(CURVEFS_SERVICE, "GetOrAllocateSegment");
    pub const DE_ALLOCATE_SEGMENT: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "DeAllocateSegment");
    pub const RENAME_FILE: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "RenameFile");
    pub const EXTEND_FILE: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "ExtendFile");
    pub const CHANGE_OWNER: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "ChangeOwner");
    pub const LIST_DIR: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "ListDir");
    pub const OPEN_FILE: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "OpenFile");
    pub const CLOSE_FILE: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "CloseFile");
    pub const REFRESH_SESSION: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "RefreshSession");
    pub const CREATE_CLONE_FILE: RpcMethod = RpcMethod::new(CURVEFS_SERVICE, "CreateCloneFile");
    pub const SET_CLONE_FILE_STATUS: RpcMethod =
        RpcMethod::new(CURVEFS_SERVICE, "SetCloneFileStatus");

    pub const GET_CHUNK_SERVER_LIST_IN_COPYSETS: RpcMethod =
        RpcMethod::new(TOPOLOGY_SERVICE, "GetChunkServerListInCopySets");
    pub const GET_CLUSTER_INFO: RpcMethod = RpcMethod::new(TOPOLOGY_SERVICE, "GetClusterInfo");
    pub const GET_CHUNK_SERVER: RpcMethod = RpcMethod::new(TOPOLOGY_SERVICE, "GetChunkServer");
    pub const LIST_POOLSET: RpcMethod = RpcMethod::new(TOPOLOGY_SERVICE, "ListPoolset");

    /// curvefs's local chunkservers only: what they are (see [`super::route`]).
    pub const LOCAL_CHUNK_SERVER: &str = "curvefs.local.LocalChunkServer";
    pub const IDENTIFY: RpcMethod = RpcMethod::new(LOCAL_CHUNK_SERVER, "Identify");

    pub const READ_CHUNK: RpcMethod = RpcMethod::new(CHUNK_SERVICE, "ReadChunk");
    pub const WRITE_CHUNK: RpcMethod = RpcMethod::new(CHUNK_SERVICE, "WriteChunk");
    pub const CREATE_CLONE_CHUNK: RpcMethod = RpcMethod::new(CHUNK_SERVICE, "CreateCloneChunk");
    pub const RECOVER_CHUNK: RpcMethod = RpcMethod::new(CHUNK_SERVICE, "RecoverChunk");
    pub const READ_CHUNK_SNAPSHOT: RpcMethod = RpcMethod::new(CHUNK_SERVICE, "ReadChunkSnapshot");
    pub const DELETE_CHUNK_SNAPSHOT_OR_CORRECT_SN: RpcMethod =
        RpcMethod::new(CHUNK_SERVICE, "DeleteChunkSnapshotOrCorrectSn");
    pub const GET_CHUNK_INFO: RpcMethod = RpcMethod::new(CHUNK_SERVICE, "GetChunkInfo");
    pub const GET_LEADER: RpcMethod = RpcMethod::new(CLI_SERVICE2, "GetLeader");
}

/// An encoded response and the attachment that came with it (empty if none).
#[derive(Debug, Clone, Default)]
pub struct RpcReply {
    pub payload: Bytes,
    pub attachment: Bytes,
}

/// Why a call produced no reply. The MDS client switches servers at once on `Connect`,
/// doubles its timeout on `Timeout` and retries the rest after a pause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Connection refused, reset or aborted, host or network unreachable.
    #[error("cannot reach {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    /// The call's deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server answered with an RPC-level error instead of a response message
    /// (gRPC status; brpc error code for baidu_std).
    #[error("server error {code}: {message}")]
    Remote { code: i32, message: String },
    /// The server cannot run this request at all (no such service or method, a request it
    /// cannot parse): asking again cannot help.
    #[error("server rejected the request: {0}")]
    Rejected(String),
    /// Bytes that do not form the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Other(String),
}

/// Which wire a peer is reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// brpc's baidu_std, what stock Curve servers speak.
    BaiduStd,
    /// gRPC (tonic).
    Grpc,
}

impl Protocol {
    /// The value of `mds.transport` / `chunkserver.transport` naming it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::BaiduStd => "baidu_std",
            Protocol::Grpc => "grpc",
        }
    }

    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "baidu_std" | "brpc" => Some(Protocol::BaiduStd),
            "grpc" => Some(Protocol::Grpc),
            _ => None,
        }
    }
}

/// The one interface every RPC of the core goes through. Implementations must give every
/// call the deadline `timeout`.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        request: Bytes,
        attachment: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcReply, TransportError>>;
}

/// Encodes `req`, calls, decodes the response and returns it with the reply's attachment.
pub async fn unary_with_attachment<Req, Resp>(
    transport: &dyn Transport,
    endpoint: &str,
    method: &RpcMethod,
    req: &Req,
    attachment: Bytes,
    timeout: Duration,
) -> Result<(Resp, Bytes), TransportError>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let request = Bytes::from(req.encode_to_vec());
    let reply = transport
        .call(endpoint, method, request, attachment, timeout)
        .await?;
    let resp = Resp::decode(reply.payload).map_err(|e| {
        TransportError::Malformed(format!("{}.{}: {e}", method.service, method.method))
    })?;
    Ok((resp, reply.attachment))
}

/// [`unary_with_attachment`] for calls without attachments.
pub async fn unary<Req, Resp>(
    transport: &dyn Transport,
    endpoint: &str,
    method: &RpcMethod,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, TransportError>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    unary_with_attachment(transport, endpoint, method, req, Bytes::new(), timeout)
        .await
        .map(|(resp, _)| resp)
}
