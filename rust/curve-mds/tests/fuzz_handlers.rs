//! Every MDS method fed arbitrary bytes over baidu_std (bounded, in CI): the server answers
//! each call — a response or a brpc error — never panics, never drops the connection, and
//! still serves a well-formed call afterwards.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use curve_brpc::{CallError, Channel, DEFAULT_MAX_BODY};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Protobuf-ish bytes: valid keys with random values often enough to reach the handlers.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(
            (
                1u8..20,
                0u8..3,
                proptest::collection::vec(any::<u8>(), 0..12)
            ),
            0..8
        )
        .prop_map(|fields| {
            let mut out = Vec::new();
            for (field, wire, value) in fields {
                out.push((field << 3) | if wire == 1 { 2 } else { 0 });
                if wire == 1 {
                    out.push(value.len() as u8);
                    out.extend_from_slice(&value);
                } else {
                    out.push(value.first().copied().unwrap_or(0) & 0x7f);
                }
            }
            out
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_never_break_the_mds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mds = Mds::start_settled(dir.path()).await;
    let ch = Channel::connect(
        &mds.addr.to_string(),
        Duration::from_secs(2),
        DEFAULT_MAX_BODY,
    )
    .await
    .expect("connects");
    // Cases drawn from the strategy (a printed seed, fixed unless asked otherwise), sent one
    // by one on the runtime: the property is the server's, so no shrinking is needed to
    // read a failure.
    let (mut runner, cases) = fuzz_runner();
    let strategy = (0..curve_mds::METHODS.len(), payload());
    for _ in 0..cases {
        let (m, bytes) = strategy.new_tree(&mut runner).expect("generates").current();
        let (service, method, _) = curve_mds::METHODS[m];
        let r = ch
            .call(
                service,
                method,
                Bytes::from(bytes.clone()),
                Bytes::new(),
                Duration::from_secs(10),
            )
            .await;
        match r {
            Ok(_) | Err(CallError::Remote { .. }) => {}
            Err(e) => panic!("{service}.{method} with {bytes:02x?}: {e}"),
        }
    }
    // Still serving a well-formed call.
    let r = ch
        .call(
            "curve.mds.topology.TopologyService",
            "GetClusterInfo",
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(10),
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
}
