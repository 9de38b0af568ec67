//! Response bodies: the upstream's body streamed through with its in-flight guard (ended early
//! by a cut), and the proxy's own short answers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::target::InFlight;

/// Any error inside a body.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// An upstream body passed through frame by frame (never buffered whole), carrying the request's
/// in-flight guard until its last frame, and ending with an error (which aborts the client's
/// response) when the target is cut.
pub(crate) struct GuardedBody {
    inner: Incoming,
    guard: Option<InFlight>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl GuardedBody {
    pub(crate) fn new(inner: Incoming, guard: InFlight) -> GuardedBody {
        let cut = Box::pin(guard.token().clone().cancelled_owned());
        GuardedBody {
            inner,
            guard: Some(guard),
            cut,
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.guard.is_some() && this.cut.as_mut().poll(cx).is_ready() {
            if let Some(mut guard) = this.guard.take() {
                guard.mark_cut();
            }
            return Poll::Ready(Some(Err(
                "the response was cut at the drain deadline".into()
            )));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // Done: out of the in-flight count now, not when hyper drops the body.
                this.guard = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                if let Some(guard) = this.guard.take() {
                    guard.mark_error();
                }
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A guarded upstream body as a [`ProxyBody`].
pub(crate) fn streamed(inner: Incoming, guard: InFlight) -> ProxyBody {
    UnsyncBoxBody::new(GuardedBody::new(inner, guard))
}

/// An empty body.
pub(crate) fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A plain-text answer from the proxy itself.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<ProxyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(body.into()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// An error answer from the proxy: `blue-green-proxy: {reason}`.
pub(crate) fn error(status: StatusCode, reason: impl std::fmt::Display) -> Response<ProxyBody> {
    let mut res = text(status, format!("blue-green-proxy: {reason}\n"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    }
    res
}

const MAINTENANCE_PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Down for maintenance</title></head>\n<body><h1>Down for maintenance</h1><p>This service is down for maintenance and will be back shortly.</p></body></html>\n";

/// The maintenance page, `503`.
pub(crate) fn maintenance() -> Response<ProxyBody> {
    let mut res = text(StatusCode::SERVICE_UNAVAILABLE, MAINTENANCE_PAGE);
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("30"));
    res
}
