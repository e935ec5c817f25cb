//! brpc's baidu_std, as stock Curve servers speak it: one persistent connection per
//! endpoint (brpc's "single" connection type), many calls in flight on it, chunk data as
//! the brpc attachment. A failed connection is replaced on the next call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use curve_brpc::{CallError, Channel, errors};
use futures::future::BoxFuture;

use super::{RpcMethod, RpcReply, Transport, TransportError};

struct Endpoint {
    current: Mutex<Option<Arc<Channel>>>,
    /// Held while connecting, so concurrent callers share one new connection.
    connecting: tokio::sync::Mutex<()>,
}

struct Inner {
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    connect_timeout: Duration,
    max_body: u32,
}

#[derive(Clone)]
pub struct BaiduStdTransport {
    inner: Arc<Inner>,
}

impl BaiduStdTransport {
    /// `max_body`: the largest frame body sent or accepted (brpc's default is 64 MiB).
    pub fn new(connect_timeout: Duration, max_body: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoints: Mutex::new(HashMap::new()),
                connect_timeout,
                max_body,
            }),
        }
    }
}

impl Endpoint {
    fn usable(&self) -> Option<Arc<Channel>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|c| c.is_usable())
            .cloned()
    }
}

impl Inner {
    fn endpoint(&self, addr: &str) -> Arc<Endpoint> {
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(addr.to_string())
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    current: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    async fn channel(&self, addr: &str) -> Result<Arc<Channel>, CallError> {
        let ep = self.endpoint(addr);
        if let Some(c) = ep.usable() {
            return Ok(c);
        }
        let _connecting = ep.connecting.lock().await;
        if let Some(c) = ep.usable() {
            return Ok(c);
        }
        // A channel that was there and is no longer usable: the connection was lost.
        let lost = ep
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some();
        if lost {
            crate::events::warn_limited!(
                endpoint = addr,
                "connection to {addr} lost; reconnecting"
            );
        }
        let c = match Channel::connect(addr, self.connect_timeout, self.max_body).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::debug!(endpoint = addr, "cannot connect to {addr}: {e}");
                return Err(e);
            }
        };
        tracing::debug!(endpoint = addr, "connected to {addr} (baidu_std)");
        *ep.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
        Ok(c)
    }
}

impl Transport for BaiduStdTransport {
    fn call(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        request: Bytes,
        attachment: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcReply, TransportError>> {
        let inner = self.inner.clone();
        let endpoint = endpoint.to_string();
        let method = *method;
        Box::pin(async move {
            let call = async {
                let channel = inner.channel(&endpoint).await?;
                channel
                    .call(method.service, method.method, request, attachment, timeout)
                    .await
            };
            // One deadline for connecting and answering together.
            let result = tokio::time::timeout(timeout, call)
                .await
                .unwrap_or(Err(CallError::Timeout(timeout)));
            result
                .map(|r| RpcReply {
                    payload: r.payload,
                    attachment: r.attachment,
                })
                .map_err(|e| classify(&endpoint, &method, e))
        })
    }
}

/// brpc's outcomes in the terms the retry rules above use.
fn classify(endpoint: &str, method: &RpcMethod, e: CallError) -> TransportError {
    match e {
        CallError::Connect { message, .. } | CallError::Broken { message, .. } => {
            TransportError::Connect {
                endpoint: endpoint.to_string(),
                message,
            }
        }
        CallError::Timeout(t) => TransportError::Timeout(t),
        CallError::Remote { code, text } => {
            let named = match errors::name(code) {
                Some(name) => format!("brpc error {code} ({name})"),
                None => format!("brpc error {code}"),
            };
            let message = format!(
                "{endpoint} {}.{}: {named}: {text}",
                method.service, method.method
            );
            if errors::is_final(code) {
                TransportError::Rejected(message)
            } else if matches!(
                code,
                errors::ELOGOFF | errors::ECLOSE | errors::EFAILEDSOCKET
            ) {
                // The server is going away: as good as unreachable.
                TransportError::Connect {
                    endpoint: endpoint.to_string(),
                    message,
                }
            } else if code == errors::ERPCTIMEDOUT {
                TransportError::Timeout(Duration::ZERO)
            } else {
                TransportError::Remote { code, message }
            }
        }
        CallError::Encode(e) => TransportError::Other(format!("{endpoint}: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::transport::methods;

    #[test]
    fn brpc_codes_map_onto_the_retry_classes() {
        let m = methods::GET_FILE_INFO;
        let remote = |code| {
            classify(
                "h:1",
                &m,
                CallError::Remote {
                    code,
                    text: "t".into(),
                },
            )
        };
        for code in [1001, 1002, 1003] {
            assert!(
                matches!(remote(code), TransportError::Rejected(_)),
                "{code}"
            );
        }
        for code in [2003, 2005] {
            assert!(
                matches!(remote(code), TransportError::Connect { .. }),
                "{code}"
            );
        }
        assert!(matches!(remote(1008), TransportError::Timeout(_)));
        for code in [1011, 2001, 2004, 11, 2] {
            assert!(
                matches!(remote(code), TransportError::Remote { code: c, .. } if c == code),
                "{code}"
            );
        }
        let TransportError::Remote { message, .. } = remote(4242) else {
            panic!("unknown codes are Remote");
        };
        assert!(
            message.contains("4242") && message.contains("GetFileInfo"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn refused_then_reconnects_when_the_server_appears() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let t = BaiduStdTransport::new(Duration::from_millis(500), curve_brpc::DEFAULT_MAX_BODY);
        let r = t
            .call(
                &addr.to_string(),
                &methods::GET_FILE_INFO,
                Bytes::new(),
                Bytes::new(),
                Duration::from_secs(2),
            )
            .await;
        assert!(matches!(r, Err(TransportError::Connect { .. })), "{r:?}");
        // A server on the same port: the next call connects anew.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        struct Nothing;
        impl curve_brpc::Dispatch for Nothing {
            fn call(
                &self,
                r: curve_brpc::Request,
            ) -> BoxFuture<'static, Result<curve_brpc::Response, curve_brpc::RpcError>>
            {
                Box::pin(async move { Err(curve_brpc::RpcError::no_service(&r.service)) })
            }
        }
        let (_grpc, _port) = curve_brpc::share_port(listener, Arc::new(Nothing));
        let r = t
            .call(
                &addr.to_string(),
                &methods::GET_FILE_INFO,
                Bytes::new(),
                Bytes::new(),
                Duration::from_secs(2),
            )
            .await;
        assert!(matches!(r, Err(TransportError::Rejected(_))), "{r:?}");
    }
}
