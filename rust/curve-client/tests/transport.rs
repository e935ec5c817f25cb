//! The wire choices end to end: IO over every pairing of MDS and chunkserver transport
//! against the real local cluster, and the gRPC guard against a chunkserver that is not
//! one of curvefs's own.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use curve_client::transport::{
    GrpcTransport, Protocol, RoutedTransport, Transport, TransportError, methods,
};
use curve_client::{ClientConfig, CreateOptions};
use curve_proto::chunkserver::chunk_service_server::{ChunkService, ChunkServiceServer};
use curve_proto::chunkserver::{
    ChunkOpStatus, ChunkOpType, ChunkRequest, ChunkResponse, GetChunkInfoRequest,
    GetChunkInfoResponse, UpdateEpochRequest, UpdateEpochResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_over_every_pairing_of_transports() {
    let cluster = Cluster::start().await;
    let pairs = [
        (Protocol::BaiduStd, Protocol::BaiduStd),
        (Protocol::Grpc, Protocol::BaiduStd),
        (Protocol::BaiduStd, Protocol::Grpc),
        (Protocol::Grpc, Protocol::Grpc),
    ];
    for (i, (mds, chunk)) in pairs.into_iter().enumerate() {
        let conf = ClientConfig {
            mds_transport: mds,
            chunkserver_transport: chunk,
            ..cluster.config()
        };
        let c = curve_client::Client::new(conf).unwrap();
        let u = user("wire");
        let path = format!("/wire-{i}");
        c.create(
            &path,
            &u,
            u64::from(SEGMENT_SIZE),
            &CreateOptions::default(),
        )
        .await
        .unwrap();
        let fd = c.open(&path, &u).await.unwrap();
        // Across a chunk boundary, so two chunk requests go out.
        let data = pattern(i as u64, 2 * 64 * 1024);
        let offset = u64::from(CHUNK_SIZE) - 64 * 1024;
        c.write(fd, offset, &data).await.unwrap();
        let mut back = vec![0u8; data.len()];
        c.read(fd, offset, &mut back).await.unwrap();
        assert!(
            back == data,
            "{}/{}: data differs",
            mds.name(),
            chunk.name()
        );
        c.close(fd).await.unwrap();
    }
}

/// A gRPC ChunkService that is not curvefs's: it serves the chunk methods but not
/// `LocalChunkServer.Identify`, as a stock chunkserver reached over HTTP/2 would.
#[derive(Clone, Default)]
struct Foreign {
    writes: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl ChunkService for Foreign {
    async fn read_chunk(
        &self,
        _: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(ChunkResponse::default()))
    }

    async fn write_chunk(
        &self,
        _: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(ChunkResponse::default()))
    }

    async fn read_chunk_snapshot(
        &self,
        _: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Err(Status::unimplemented("no"))
    }

    async fn delete_chunk_snapshot_or_correct_sn(
        &self,
        _: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Err(Status::unimplemented("no"))
    }

    async fn get_chunk_info(
        &self,
        _: Request<GetChunkInfoRequest>,
    ) -> Result<Response<GetChunkInfoResponse>, Status> {
        Err(Status::unimplemented("no"))
    }

    async fn update_epoch(
        &self,
        _: Request<UpdateEpochRequest>,
    ) -> Result<Response<UpdateEpochResponse>, Status> {
        Err(Status::unimplemented("no"))
    }

    async fn create_clone_chunk(
        &self,
        _: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Err(Status::unimplemented("no"))
    }

    async fn recover_chunk(
        &self,
        _: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
}

fn write_request() -> Bytes {
    Bytes::from(
        ChunkRequest {
            op_type: ChunkOpType::ChunkOpWrite as i32,
            logic_pool_id: 1,
            copyset_id: 1,
            chunk_id: 1,
            offset: Some(0),
            size: Some(4096),
            sn: Some(1),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

fn routed_grpc() -> RoutedTransport {
    let grpc: Arc<dyn Transport> = Arc::new(GrpcTransport::new(Duration::from_secs(1), 1));
    RoutedTransport::new(grpc.clone(), grpc, Protocol::Grpc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_chunk_request_goes_over_grpc_to_a_server_that_is_not_ours() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let foreign = Foreign::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ChunkServiceServer::new(foreign.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let t = routed_grpc();
    for method in [&methods::WRITE_CHUNK, &methods::READ_CHUNK] {
        for _ in 0..2 {
            let r = t
                .call(
                    &addr,
                    method,
                    write_request(),
                    Bytes::from(vec![1u8; 4096]),
                    Duration::from_secs(2),
                )
                .await;
            let Err(TransportError::Rejected(why)) = r else {
                panic!("{} was not refused: {r:?}", method.method);
            };
            assert!(why.contains("chunkserver.transport=baidu_std"), "{why}");
        }
    }
    assert_eq!(foreign.writes.load(Ordering::SeqCst), 0);
    assert_eq!(foreign.reads.load(Ordering::SeqCst), 0);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_chunkserver_is_asked_again_not_refused_for_good() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let t = routed_grpc();
    let r = t
        .call(
            &addr,
            &methods::WRITE_CHUNK,
            write_request(),
            Bytes::from(vec![1u8; 4096]),
            Duration::from_secs(2),
        )
        .await;
    assert!(matches!(r, Err(TransportError::Connect { .. })), "{r:?}");
    // Now one of ours starts on that port: the same endpoint is asked again and chunk
    // IO goes through.
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let config = curve_chunkserver::ChunkServerConfig {
        id: 1,
        listen: listener.local_addr().unwrap(),
        data_dir: dir.path().to_path_buf(),
        chunk_size: CHUNK_SIZE,
        block_size: BLOCK_SIZE,
        copysets: vec![curve_chunkserver::HostedCopyset {
            logical_pool_id: 1,
            copyset_id: 1,
            members: vec![curve_chunkserver::PeerEntry {
                id: 1,
                addr: addr.clone(),
            }],
        }],
        redirect_hints: false,
        durability: curve_chunkserver::Durability::Cache,
        origin: None,
    };
    let server = tokio::spawn(curve_chunkserver::serve_with_listener(
        config,
        listener,
        std::future::pending(),
    ));
    let r = t
        .call(
            &addr,
            &methods::WRITE_CHUNK,
            write_request(),
            Bytes::from(vec![1u8; 4096]),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let resp = ChunkResponse::decode(r.payload).unwrap();
    // A lone member leads its copyset once its election ran; either answer came from
    // the chunkserver itself.
    let status = ChunkOpStatus::try_from(resp.status).unwrap();
    assert!(
        matches!(status, ChunkOpStatus::Success | ChunkOpStatus::Redirected),
        "{status:?}"
    );
    server.abort();
}
