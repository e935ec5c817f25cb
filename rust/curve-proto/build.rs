//! Compiles `protos/` with protox (pure Rust), so building needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protos");
    let files = [
        "common.proto",
        "nameserver2.proto",
        "topology.proto",
        "chunk.proto",
        "cli2.proto",
        "local_replica.proto",
        "baidu_rpc_meta.proto",
        "snapshotcloneserver.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        // Chunk data as `Bytes`: decoding slices the receive buffer instead of copying it,
        // and a write's data passes from one message to the next without a copy.
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
