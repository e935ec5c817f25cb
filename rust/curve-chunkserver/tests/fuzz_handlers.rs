//! The chunkserver's methods (clone chunk ones included) fed arbitrary messages and
//! attachments over baidu_std
//! (bounded, in CI): every call is answered — a response or a brpc error — nothing panics,
//! the connection stays up, and a well-formed write and read still work afterwards.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use curve_brpc::{CallError, Channel, DEFAULT_MAX_BODY};
use curve_proto::chunkserver::{ChunkOpStatus, ChunkRequest, ChunkResponse};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use prost::Message;

const METHODS: &[(&str, &str)] = &[
    ("curve.chunkserver.ChunkService", "ReadChunk"),
    ("curve.chunkserver.ChunkService", "WriteChunk"),
    ("curve.chunkserver.ChunkService", "GetChunkInfo"),
    ("curve.chunkserver.ChunkService", "UpdateEpoch"),
    ("curve.chunkserver.ChunkService", "CreateCloneChunk"),
    ("curve.chunkserver.ChunkService", "RecoverChunk"),
    ("curve.chunkserver.CliService2", "GetLeader"),
    ("curve.chunkserver.CliService2", "TransferLeader"),
    ("curvefs.local.LocalChunkServer", "Identify"),
];

/// Either raw bytes or a ChunkRequest with random (often invalid) fields.
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        (
            0i32..12,
            0u32..3,
            0u32..4,
            any::<u64>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(prop_oneof![Just(0u32), Just(4096), any::<u32>()]),
            proptest::option::of(any::<u64>()),
            // Clone fields: locations and sources valid, odd or garbage.
            proptest::option::of(prop_oneof![
                Just("/vol:0@cs".to_string()),
                Just("key@s3".to_string()),
                ".{0,12}",
            ]),
            proptest::option::of((
                prop_oneof![Just("/vol".to_string()), ".{0,8}"],
                any::<u64>()
            )),
        )
            .prop_map(
                |(op, pool, copyset, chunk, offset, size, sn, location, source)| {
                    ChunkRequest {
                        op_type: op,
                        logic_pool_id: pool,
                        copyset_id: copyset,
                        chunk_id: chunk % 64,
                        offset,
                        size,
                        sn,
                        location,
                        clone_file_source: source.as_ref().map(|s| s.0.clone()),
                        clone_file_offset: source.map(|s| s.1),
                        ..Default::default()
                    }
                    .encode_to_vec()
                },
            ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_never_break_the_chunkserver() -> TestResult {
    let cluster = Cluster::start().await?;
    cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;
    let ch = Channel::connect(&cluster.addr(0), Duration::from_secs(2), DEFAULT_MAX_BODY).await?;
    // A printed seed, fixed unless asked otherwise (common::fuzz_runner).
    let (mut runner, cases) = fuzz_runner();
    let strategy = (
        0..METHODS.len(),
        message(),
        proptest::collection::vec(any::<u8>(), 0..9000),
    );
    for _ in 0..cases {
        let tree = strategy.new_tree(&mut runner).map_err(|e| e.to_string())?;
        let (m, msg, attachment) = tree.current();
        let (service, method) = METHODS[m];
        let r = ch
            .call(
                service,
                method,
                Bytes::from(msg.clone()),
                Bytes::from(attachment),
                Duration::from_secs(10),
            )
            .await;
        match r {
            Ok(_) | Err(CallError::Remote { .. }) => {}
            Err(e) => panic!("{service}.{method} with {msg:02x?}: {e}"),
        }
    }
    let data = pattern(4096, 9);
    let mut req = write_request(CS_A, 63, 0, data.clone(), 1);
    req.attachment = None;
    let reply = ch
        .call(
            "curve.chunkserver.ChunkService",
            "WriteChunk",
            Bytes::from(req.encode_to_vec()),
            Bytes::from(data.clone()),
            Duration::from_secs(10),
        )
        .await?;
    let resp = ChunkResponse::decode(reply.payload)?;
    assert_eq!(resp.status, ChunkOpStatus::Success as i32);
    Ok(())
}
