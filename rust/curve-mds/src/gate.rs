//! No answer from an MDS whose lease ran out, on either wire.
//!
//! The lease is checked when a request arrives and again when its answer is ready: an MDS
//! stopped in between (SIGSTOP, a long pause) may have been replaced meanwhile, and what it
//! did then went to a store nobody reads any more, so the caller must see a failed call,
//! not an answer. A failed call is what a client retries on another MDS address. An MDS
//! served without a lease (one MDS alone, as in the crate's tests) is never gated.

use std::sync::Arc;
use std::task::{Context, Poll};

use curve_brpc::{Dispatch, Request, Response, RpcError, errors};
use futures::future::BoxFuture;

use curve_lease::LeaseGate;

const DEPOSED: &str = "this MDS is not the active one: its lease ran out";

fn open(lease: Option<&Arc<LeaseGate>>) -> bool {
    lease.is_none_or(|l| l.is_open())
}

/// The baidu_std face behind the gate.
pub(crate) struct Gated<D> {
    pub lease: Option<Arc<LeaseGate>>,
    pub inner: D,
}

impl<D: Dispatch> Dispatch for Gated<D> {
    fn call(&self, request: Request) -> BoxFuture<'static, Result<Response, RpcError>> {
        let lease = self.lease.clone();
        if !open(lease.as_ref()) {
            return Box::pin(async { Err(RpcError::new(errors::ELOGOFF, DEPOSED)) });
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            if open(lease.as_ref()) {
                answer
            } else {
                Err(RpcError::new(errors::ELOGOFF, DEPOSED))
            }
        })
    }
}

/// The gRPC face behind the gate: a tower layer around tonic's routes.
#[derive(Clone)]
pub(crate) struct GateLayer {
    pub lease: Option<Arc<LeaseGate>>,
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            lease: self.lease.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct GateService<S> {
    lease: Option<Arc<LeaseGate>>,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GateService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let lease = self.lease.clone();
        if !open(lease.as_ref()) {
            return Box::pin(async { Ok(tonic::Status::unavailable(DEPOSED).into_http()) });
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await?;
            if open(lease.as_ref()) {
                Ok(answer)
            } else {
                Ok(tonic::Status::unavailable(DEPOSED).into_http())
            }
        })
    }
}
