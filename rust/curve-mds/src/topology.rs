//! `curve.mds.topology.TopologyService`: the static layout of the local cluster (one poolset,
//! one logical pool, its copysets and chunkservers) and the persisted cluster id. Topology
//! RPCs are not authenticated upstream, so none are here.

use curve_proto::common::ChunkServerLocation;
use curve_proto::mds::topology::topology_service_server::TopologyService;
use curve_proto::mds::topology::{
    ChunkServerInfo, ChunkServerStatus, CopySetServerInfo, DiskState, GetChunkServerInfoRequest,
    GetChunkServerInfoResponse, GetChunkServerListInCopySetsRequest,
    GetChunkServerListInCopySetsResponse, GetClusterInfoRequest, GetClusterInfoResponse,
    ListChunkServerRequest, ListChunkServerResponse, ListPoolsetRequest, ListPoolsetResponse,
    OnlineState, PoolsetInfo,
};
use tonic::{Request, Response, Status};

use crate::{ChunkServerEntry, TopologyConfig};

/// Topology status codes (sint32 on the wire).
const TOPO_OK: i32 = 0;
const TOPO_INVALID_PARAM: i32 = -2;
const TOPO_CHUNKSERVER_NOT_FOUND: i32 = -6;
const TOPO_SERVER_NOT_FOUND: i32 = -7;
const TOPO_COPYSET_NOT_FOUND: i32 = -11;

/// The only poolset's id, as upstream numbers its default poolset.
const POOLSET_ID: u32 = 1;

#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub config: TopologyConfig,
    pub cluster_id: String,
}

impl Topology {
    pub(crate) fn location(cs: &ChunkServerEntry) -> ChunkServerLocation {
        ChunkServerLocation {
            chunk_server_id: cs.id,
            host_ip: cs.host.clone(),
            port: u32::from(cs.port),
            external_ip: Some(cs.external_ip().to_string()),
        }
    }

    /// Every chunkserver's location, in configuration order.
    pub(crate) fn all_locations(&self) -> Vec<ChunkServerLocation> {
        self.config
            .chunkservers
            .iter()
            .map(Self::location)
            .collect()
    }

    fn chunkserver(&self, id: u32) -> Option<&ChunkServerEntry> {
        self.config.chunkservers.iter().find(|c| c.id == id)
    }

    fn info(&self, cs: &ChunkServerEntry) -> ChunkServerInfo {
        let n = self.config.chunkservers.len().max(1) as u64;
        ChunkServerInfo {
            chunk_server_id: cs.id,
            disk_type: "ssd".into(),
            host_ip: cs.host.clone(),
            port: u32::from(cs.port),
            status: ChunkServerStatus::Readwrite as i32,
            disk_status: DiskState::Disknormal as i32,
            online_state: OnlineState::Online as i32,
            mount_point: format!("local://chunkserver-{}", cs.id),
            disk_capacity: self.config.pool_capacity / n,
            disk_used: 0,
            external_ip: Some(cs.external_ip().to_string()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }
    }

    /// Upstream stops at the first unknown (pool, copyset) with -11, keeping what it filled.
    pub(crate) fn copyset_servers(
        &self,
        logical_pool_id: u32,
        copyset_ids: &[u32],
    ) -> GetChunkServerListInCopySetsResponse {
        let mut cs_info = Vec::with_capacity(copyset_ids.len());
        for &id in copyset_ids {
            let copyset = (logical_pool_id == self.config.logical_pool_id)
                .then(|| self.config.copysets.iter().find(|c| c.id == id))
                .flatten();
            let Some(copyset) = copyset else {
                return GetChunkServerListInCopySetsResponse {
                    status_code: TOPO_COPYSET_NOT_FOUND,
                    cs_info,
                };
            };
            let cs_locs = copyset
                .members
                .iter()
                .filter_map(|m| self.chunkserver(*m))
                .map(Self::location)
                .collect();
            cs_info.push(CopySetServerInfo {
                copyset_id: id,
                cs_locs,
            });
        }
        GetChunkServerListInCopySetsResponse {
            status_code: TOPO_OK,
            cs_info,
        }
    }

    pub(crate) fn get_chunkserver(
        &self,
        req: &GetChunkServerInfoRequest,
    ) -> GetChunkServerInfoResponse {
        let found = match (req.chunk_server_id, req.host_ip.as_deref(), req.port) {
            (Some(id), _, _) => self.chunkserver(id),
            (None, Some(ip), Some(port)) => self
                .config
                .chunkservers
                .iter()
                .find(|c| c.host == ip && u32::from(c.port) == port),
            _ => {
                return GetChunkServerInfoResponse {
                    status_code: TOPO_INVALID_PARAM,
                    chunk_server_info: None,
                };
            }
        };
        match found {
            Some(cs) => GetChunkServerInfoResponse {
                status_code: TOPO_OK,
                chunk_server_info: Some(self.info(cs)),
            },
            None => GetChunkServerInfoResponse {
                status_code: TOPO_CHUNKSERVER_NOT_FOUND,
                chunk_server_info: None,
            },
        }
    }

    /// The local cluster's "servers" are its distinct hosts, numbered from 1 in config order.
    fn servers(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = Vec::new();
        for cs in &self.config.chunkservers {
            if !hosts.contains(&cs.host.as_str()) {
                hosts.push(&cs.host);
            }
        }
        hosts
    }

    /// The chunkservers of one server, found by ip (upstream's port there is the server's,
    /// not a chunkserver's, so it is ignored) or by server id.
    pub(crate) fn list_chunkservers(
        &self,
        req: &ListChunkServerRequest,
    ) -> ListChunkServerResponse {
        let servers = self.servers();
        let host = match (req.ip.as_deref(), req.server_id) {
            (Some(ip), _) => servers.iter().find(|h| **h == ip).copied(),
            (None, Some(id)) => id
                .checked_sub(1)
                .and_then(|i| servers.get(i as usize))
                .copied(),
            (None, None) => {
                return ListChunkServerResponse {
                    status_code: TOPO_INVALID_PARAM,
                    chunk_server_infos: Vec::new(),
                };
            }
        };
        let Some(host) = host else {
            return ListChunkServerResponse {
                status_code: TOPO_SERVER_NOT_FOUND,
                chunk_server_infos: Vec::new(),
            };
        };
        let chunk_server_infos = self
            .config
            .chunkservers
            .iter()
            .filter(|c| c.host == host)
            .map(|c| self.info(c))
            .collect();
        ListChunkServerResponse {
            status_code: TOPO_OK,
            chunk_server_infos,
        }
    }
}

/// The tonic face of [`Topology`].
pub(crate) struct TopologyServiceImpl {
    pub topology: std::sync::Arc<Topology>,
}

#[tonic::async_trait]
impl TopologyService for TopologyServiceImpl {
    async fn get_chunk_server_list_in_copy_sets(
        &self,
        request: Request<GetChunkServerListInCopySetsRequest>,
    ) -> Result<Response<GetChunkServerListInCopySetsResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.topology
                .copyset_servers(req.logical_pool_id, &req.copyset_id),
        ))
    }

    async fn get_cluster_info(
        &self,
        _request: Request<GetClusterInfoRequest>,
    ) -> Result<Response<GetClusterInfoResponse>, Status> {
        Ok(Response::new(GetClusterInfoResponse {
            status_code: TOPO_OK,
            cluster_id: Some(self.topology.cluster_id.clone()),
        }))
    }

    async fn get_chunk_server(
        &self,
        request: Request<GetChunkServerInfoRequest>,
    ) -> Result<Response<GetChunkServerInfoResponse>, Status> {
        Ok(Response::new(
            self.topology.get_chunkserver(request.get_ref()),
        ))
    }

    async fn list_chunk_server(
        &self,
        request: Request<ListChunkServerRequest>,
    ) -> Result<Response<ListChunkServerResponse>, Status> {
        Ok(Response::new(
            self.topology.list_chunkservers(request.get_ref()),
        ))
    }

    async fn list_poolset(
        &self,
        _request: Request<ListPoolsetRequest>,
    ) -> Result<Response<ListPoolsetResponse>, Status> {
        Ok(Response::new(ListPoolsetResponse {
            status_code: TOPO_OK,
            poolset_infos: vec![PoolsetInfo {
                poolset_id: POOLSET_ID,
                poolset_name: self.topology.config.poolset.clone(),
                r#type: "SSD".into(),
                desc: None,
            }],
        }))
    }
}
