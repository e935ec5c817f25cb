//! Curve's wire messages (proto2, upstream's packages and field numbers) and the gRPC
//! services the local cluster serves. Generated from `protos/`; nothing else lives here.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `curve.common`: peers and chunkserver locations.
pub mod common {
    tonic::include_proto!("curve.common");
}

/// `curve.mds`: the namespace service.
pub mod mds {
    tonic::include_proto!("curve.mds");

    /// `curve.mds.topology`: copysets, chunkservers, cluster id.
    pub mod topology {
        tonic::include_proto!("curve.mds.topology");
    }
}

/// `curve.chunkserver`: chunk IO and the leader lookup.
pub mod chunkserver {
    tonic::include_proto!("curve.chunkserver");
}

/// `curvefs.local`: replication between the local cluster's chunkservers (not Curve's wire).
pub mod local {
    tonic::include_proto!("curvefs.local");
}

/// `curve.snapshotcloneserver`: the snapshot/clone service's records in its data store.
pub mod snapshotclone {
    tonic::include_proto!("curve.snapshotcloneserver");
}

/// `brpc.policy`: the meta that frames every baidu_std message (not a service).
pub mod brpc {
    tonic::include_proto!("brpc.policy");
}

/// Field number of the `attachment` field added to `ChunkRequest`/`ChunkResponse` for
/// transports without brpc attachments (see protos/chunk.proto).
pub const ATTACHMENT_FIELD: u32 = 1000;

/// What curvefs's local chunkservers answer to `curvefs.local.LocalChunkServer/Identify`,
/// and what a client checks for before it sends chunk data over gRPC.
pub const LOCAL_CHUNKSERVER_IDENTITY: &str = "curvefs-local-chunkserver";
