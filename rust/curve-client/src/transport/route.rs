//! Sends MDS calls and chunkserver calls over the transport configured for each, and
//! keeps chunk data off gRPC unless the chunkserver is one of curvefs's own.
//!
//! Why the guard: a stock chunkserver answers gRPC too (brpc serves HTTP/2 on its port),
//! but a gRPC WriteChunk reaches it with an empty attachment, which it writes into its
//! Raft log and then aborts on (every replica, on every restart). So before the first
//! ChunkService call to an endpoint over gRPC, the endpoint is asked
//! `curvefs.local.LocalChunkServer/Identify`, which only curvefs's local chunkservers
//! answer. An endpoint that answers anything else is refused for the life of the client,
//! with an error naming the key to set; one that cannot be reached is asked again later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use curve_proto::local::{IdentifyRequest, IdentifyResponse};
use futures::future::BoxFuture;
use prost::Message;

use super::{Protocol, RpcMethod, RpcReply, Transport, TransportError, methods};

/// One transport for the MDS, one for the chunkservers.
pub struct RoutedTransport {
    mds: Arc<dyn Transport>,
    chunk: Arc<dyn Transport>,
    chunk_protocol: Protocol,
    /// gRPC chunkserver endpoints and whether they proved to be curvefs's own.
    identified: Arc<Mutex<HashMap<String, bool>>>,
}

impl RoutedTransport {
    pub fn new(
        mds: Arc<dyn Transport>,
        chunk: Arc<dyn Transport>,
        chunk_protocol: Protocol,
    ) -> Self {
        Self {
            mds,
            chunk,
            chunk_protocol,
            identified: Arc::default(),
        }
    }
}

fn is_mds_service(service: &str) -> bool {
    service == methods::CURVEFS_SERVICE || service == methods::TOPOLOGY_SERVICE
}

fn refusal(endpoint: &str, why: &str) -> TransportError {
    TransportError::Rejected(format!(
        "{endpoint} is not a curvefs local chunkserver ({why}); chunk IO over gRPC would \
         lose data on a stock Curve chunkserver, so none is sent: set \
         chunkserver.transport=baidu_std in client.conf"
    ))
}

/// Asks `endpoint` whether it is a curvefs local chunkserver: `Ok(true)`/`Ok(false)`
/// once it answered, `Err` if it could not be asked (try again later).
async fn identify(
    chunk: &dyn Transport,
    endpoint: &str,
    timeout: Duration,
) -> Result<bool, TransportError> {
    let request = Bytes::from(IdentifyRequest {}.encode_to_vec());
    match chunk
        .call(endpoint, &methods::IDENTIFY, request, Bytes::new(), timeout)
        .await
    {
        Ok(reply) => Ok(IdentifyResponse::decode(reply.payload)
            .is_ok_and(|r| r.implementation == curve_proto::LOCAL_CHUNKSERVER_IDENTITY)),
        // The server answered, but not as ours does.
        Err(TransportError::Rejected(_) | TransportError::Remote { .. }) => Ok(false),
        Err(TransportError::Malformed(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Transport for RoutedTransport {
    fn call(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        request: Bytes,
        attachment: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcReply, TransportError>> {
        if is_mds_service(method.service) {
            return self
                .mds
                .call(endpoint, method, request, attachment, timeout);
        }
        let guarded =
            self.chunk_protocol == Protocol::Grpc && method.service == methods::CHUNK_SERVICE;
        if !guarded {
            return self
                .chunk
                .call(endpoint, method, request, attachment, timeout);
        }
        let known = self
            .identified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
            .copied();
        match known {
            Some(true) => self
                .chunk
                .call(endpoint, method, request, attachment, timeout),
            Some(false) => {
                let err = refusal(endpoint, "it did not identify as one");
                Box::pin(async move { Err(err) })
            }
            None => {
                let chunk = self.chunk.clone();
                let identified = self.identified.clone();
                let endpoint = endpoint.to_string();
                let method = *method;
                Box::pin(async move {
                    let started = std::time::Instant::now();
                    let ours = identify(chunk.as_ref(), &endpoint, timeout).await?;
                    identified
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(endpoint.clone(), ours);
                    if !ours {
                        tracing::error!(
                            %endpoint,
                            "refusing chunk IO over gRPC: not a curvefs local chunkserver; \
                             set chunkserver.transport=baidu_std"
                        );
                        return Err(refusal(&endpoint, "it did not identify as one"));
                    }
                    let left = timeout.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(TransportError::Timeout(timeout));
                    }
                    chunk
                        .call(&endpoint, &method, request, attachment, left)
                        .await
                })
            }
        }
    }
}
