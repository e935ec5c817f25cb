//! The MDS's two services over brpc's baidu_std, as a stock MDS serves them. Each call
//! runs the same handler as the gRPC face; the caller's address reaches it as it does
//! through tonic, because CloseFile and RefreshSession record it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use curve_brpc::{Dispatch, Request, Response, RpcError, errors};
use curve_proto::mds::curve_fs_service_server::CurveFsService;
use curve_proto::mds::topology::topology_service_server::TopologyService;
use futures::future::BoxFuture;
use prost::Message;
use tonic::transport::server::TcpConnectInfo;

use crate::auth::{CURVEFS, TOPOLOGY};
use crate::service::CurveFsServiceImpl;
use crate::topology::TopologyServiceImpl;

pub(crate) struct BaiduStd {
    pub namespace: Arc<CurveFsServiceImpl>,
    pub topology: Arc<TopologyServiceImpl>,
}

/// Decodes the request, runs a tonic handler on it with the connection's addresses, and
/// encodes its response.
async fn run<Req, Resp, Fut>(
    payload: Bytes,
    peer: SocketAddr,
    local: SocketAddr,
    handler: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> Result<Response, RpcError>
where
    Req: Message + Default,
    Resp: Message,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let req = Req::decode(payload)
        .map_err(|e| RpcError::new(errors::EREQUEST, format!("cannot parse request: {e}")))?;
    let mut req = tonic::Request::new(req);
    req.extensions_mut().insert(TcpConnectInfo {
        local_addr: Some(local),
        remote_addr: Some(peer),
    });
    match handler(req).await {
        Ok(resp) => Ok(Response {
            payload: Bytes::from(resp.into_inner().encode_to_vec()),
            attachment: Bytes::new(),
        }),
        Err(status) => Err(RpcError::new(errors::EINTERNAL, status.message())),
    }
}

/// `method name => handler` for one service's methods.
macro_rules! route {
    ($r:ident, $svc:ident, $service:expr, { $($name:literal => $f:ident),* $(,)? }) => {
        match $r.method.as_str() {
            $($name => {
                run($r.payload, $r.peer, $r.local, move |req| async move { $svc.$f(req).await })
                    .await
            })*
            m => Err(RpcError::no_method($service, m)),
        }
    };
}

impl Dispatch for BaiduStd {
    fn call(&self, r: Request) -> BoxFuture<'static, Result<Response, RpcError>> {
        let ns = self.namespace.clone();
        let topo = self.topology.clone();
        Box::pin(async move {
            match r.service.as_str() {
                CURVEFS => route!(r, ns, CURVEFS, {
                    "CreateFile" => create_file,
                    "DeleteFile" => delete_file,
                    "RecoverFile" => recover_file,
                    "GetFileInfo" => get_file_info,
                    "GetOrAllocateSegment" => get_or_allocate_segment,
                    "DeAllocateSegment" => de_allocate_segment,
                    "RenameFile" => rename_file,
                    "ExtendFile" => extend_file,
                    "ChangeOwner" => change_owner,
                    "ListDir" => list_dir,
                    "OpenFile" => open_file,
                    "CloseFile" => close_file,
                    "RefreshSession" => refresh_session,
                    "IncreaseFileEpoch" => increase_file_epoch,
                    "CreateCloneFile" => create_clone_file,
                    "SetCloneFileStatus" => set_clone_file_status,
                    "CreateSnapShot" => create_snap_shot,
                    "ListSnapShot" => list_snap_shot,
                    "DeleteSnapShot" => delete_snap_shot,
                    "CheckSnapShotStatus" => check_snap_shot_status,
                    "GetSnapShotFileSegment" => get_snap_shot_file_segment,
                }),
                TOPOLOGY => route!(r, topo, TOPOLOGY, {
                    "GetChunkServerListInCopySets" => get_chunk_server_list_in_copy_sets,
                    "GetClusterInfo" => get_cluster_info,
                    "GetChunkServer" => get_chunk_server,
                    "ListChunkServer" => list_chunk_server,
                    "ListPoolset" => list_poolset,
                }),
                s => Err(RpcError::no_service(s)),
            }
        })
    }
}
