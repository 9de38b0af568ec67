//! Response bodies: the upstream's body streamed through with its in-flight guard (ended early
//! by a cut), and the proxy's own short answers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::target::InFlight;
use crate::upstream::Lease;

/// Any error inside a body.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// An upstream body passed through frame by frame (never buffered whole), carrying the request's
/// in-flight guard until its last frame, and ending with an error (which aborts the client's
/// response) when the target is cut. It also holds the upstream connection the body comes on,
/// and gives it back to the target's pool once the body has ended cleanly (a body that is cut,
/// fails or is dropped half-read takes its connection with it: it cannot be reused).
///
/// A cut aborts the upstream connection, which wakes a body waiting for its next frame (the
/// frame never comes: the body ends or fails); the body then asks its guard whether that end was
/// the cut's.
pub(crate) struct GuardedBody {
    inner: Incoming,
    guard: Option<InFlight>,
    lease: Option<Lease>,
}

impl GuardedBody {
    pub(crate) fn new(inner: Incoming, guard: InFlight, lease: Lease) -> GuardedBody {
        GuardedBody {
            inner,
            guard: Some(guard),
            lease: Some(lease),
        }
    }

    /// Whether the target was cut since the request started.
    fn is_cut(&self) -> bool {
        self.guard.as_ref().is_some_and(InFlight::is_cut)
    }

    /// Ends the body at a cut: counted as cut, its connection closed.
    fn cut(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.lease = None;
        if let Some(mut guard) = self.guard.take() {
            guard.mark_cut();
        }
        Poll::Ready(Some(Err(
            "the response was cut at the drain deadline".into()
        )))
    }

    /// The body has ended cleanly: its connection goes back to the pool, and the request out
    /// of the in-flight count.
    fn finish(&mut self) {
        if let (Some(guard), Some(lease)) = (&self.guard, self.lease.take()) {
            guard.target().pool.put(lease, guard.generation());
        }
        self.guard = None;
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        // A body with nothing to read (`Content-Length: 0`, `204`) may never be polled.
        if self.guard.is_some() && self.inner.is_end_stream() {
            self.finish();
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
        if this.is_cut() {
            return this.cut();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            // The end of a body whose connection the cut aborted is the cut's, not the end.
            Poll::Ready(None | Some(Err(_))) if this.is_cut() => this.cut(),
            Poll::Ready(None) => {
                // Done: out of the in-flight count now, not when hyper drops the body.
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                this.lease = None;
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

/// A guarded upstream body, on the connection `lease`, as a [`ProxyBody`].
pub(crate) fn streamed(inner: Incoming, guard: InFlight, lease: Lease) -> ProxyBody {
    UnsyncBoxBody::new(GuardedBody::new(inner, guard, lease))
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
