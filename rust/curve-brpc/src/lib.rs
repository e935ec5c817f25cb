//! brpc's `baidu_std` protocol, the wire of stock Curve servers (reference §16.2): the
//! frame format, a client [`Channel`] with many calls in flight on one connection, and a
//! server connection loop with a port shared with gRPC. It knows nothing of Curve's
//! messages: callers hand it encoded messages and attachments.
//!
//! Modules: `frame` (encode/decode one packet, with limits), `wire` (vectored writer,
//! frame reader), `channel` (client), `server` (dispatch, shared port), `errors` (brpc's
//! codes), `tcp` (socket options).

pub mod channel;
pub mod errors;
pub mod frame;
pub mod server;
mod tcp;
mod wire;

pub use channel::{CallError, Channel, Reply};
pub use frame::{DEFAULT_MAX_BODY, FrameError};
pub use server::{Dispatch, GrpcIncoming, Request, Response, RpcError, SharedPort, share_port};
