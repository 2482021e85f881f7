//! Early answers on keep-alive connections: a response sent before the request body was read
//! must leave an HTTP/1.1 connection usable, or say that it will not be.
//!
//! A handler that refuses a request (a chunk at the wrong offset, an oversized manifest, an
//! unknown session, a missing credential) answers without reading the body. HTTP/1.1 cannot
//! find the next request on the connection until that body has gone by, so hyper closes the
//! connection after the response — without saying so. A pooling client (Go's `net/http`, which
//! docker, containerd, skopeo and podman use) has already put the connection back in its pool,
//! and its next request on it fails; Go does not retry a `POST`.
//!
//! [`Drain`] does what Go's own server does: once the response is ready, it reads and discards
//! what is left of the request body, up to [`DRAIN_LIMIT`] bytes (Go's 256 KiB) and for at
//! most [`DRAIN_TIME`]. When the body ends within those bounds the connection stays alive;
//! otherwise the response carries `Connection: close`, and hyper closes after writing it (the
//! [`Linger`](super::linger::Linger) transport then keeps reading for a moment, so that the
//! close does not destroy the response before the client has read it). A client that sent
//! `Expect: 100-continue` and was never asked for its body is told `Connection: close` at once:
//! its body may be on its way, or may never come.
//!
//! HTTP/2 needs none of this (the unread stream is reset, the connection lives on), so its
//! requests pass through untouched.
//!
//! ```
//! use donjon::server::drain::{Drain, RequestBody};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! // A handler that answers without reading the body.
//! let refuse = tower::service_fn(|_req: Request<RequestBody<Full<Bytes>>>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(()))
//! });
//! let body = Full::new(Bytes::from_static(b"a small body"));
//! let resp = Drain::new(refuse).oneshot(Request::new(body)).await.unwrap();
//! // The small body was drained: the connection may be reused.
//! assert!(resp.headers().get("connection").is_none());
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{header, HeaderValue, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

/// How much of an unread request body is read and discarded to keep the connection (Go's
/// server: 256 KiB).
pub const DRAIN_LIMIT: u64 = 256 * 1024;

/// How long the discarding may take before the connection is given up instead.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Keeps HTTP/1.1 connections usable after early answers; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Drain<S> {
    inner: S,
    limit: u64,
    time: Duration,
}

impl<S> Drain<S> {
    /// Wraps `inner` with the default bounds ([`DRAIN_LIMIT`], [`DRAIN_TIME`]).
    pub fn new(inner: S) -> Self {
        Self { inner, limit: DRAIN_LIMIT, time: DRAIN_TIME }
    }

    /// The most bytes read and discarded.
    pub fn limit(mut self, bytes: u64) -> Self {
        self.limit = bytes;
        self
    }

    /// The longest time spent discarding.
    pub fn time(mut self, time: Duration) -> Self {
        self.time = time;
        self
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Where a request body that its handler dropped unfinished goes, so that the response's
/// future can drain it.
struct Slot<B> {
    body: Mutex<Option<B>>,
    polled: std::sync::atomic::AtomicBool,
}

impl<B> Slot<B> {
    fn take(&self) -> Option<B> {
        self.body.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The request body as the wrapped service sees it: the connection's body, handed back to
/// [`Drain`] when dropped before its end.
pub struct RequestBody<B> {
    inner: Option<B>,
    slot: Option<Arc<Slot<B>>>,
    polled: bool,
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}

impl<B: Body + Unpin> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if !this.polled {
            this.polled = true;
            if let Some(slot) = &this.slot {
                slot.polled.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if frame.is_none() {
            // Finished: nothing to hand back.
            this.inner = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<B> Drop for RequestBody<B> {
    fn drop(&mut self) {
        if let (Some(body), Some(slot)) = (self.inner.take(), &self.slot) {
            *slot.body.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
        }
    }
}

impl<S, B, R> Service<Request<B>> for Drain<S>
where
    S: Service<Request<RequestBody<B>>, Response = Response<R>>,
    B: Body + Unpin,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = DrainFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // HTTP/2 resets the unread stream and keeps the connection: nothing to do.
        let slot = (req.version() <= Version::HTTP_11)
            .then(|| Arc::new(Slot { body: Mutex::new(None), polled: Default::default() }));
        let expect_continue = req
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let req = req.map(|b| RequestBody { inner: Some(b), slot: slot.clone(), polled: false });
        DrainFuture::Running {
            fut: self.inner.call(req),
            slot,
            expect_continue,
            limit: self.limit,
            time: self.time,
        }
    }
}

pin_project! {
    /// The future of [`Drain`].
    #[project = DrainProj]
    pub enum DrainFuture<F, B> where F: Future {
        /// The wrapped service runs.
        Running {
            #[pin]
            fut: F,
            slot: Option<Arc<Slot<B>>>,
            expect_continue: bool,
            limit: u64,
            time: Duration,
        },
        /// The response is ready; what is left of the request body is being discarded.
        Draining {
            response: Option<F::Output>,
            body: B,
            left: u64,
            deadline: Pin<Box<Sleep>>,
        },
        /// Answered.
        Done,
    }
}

fn close<R, E>(output: &mut Result<Response<R>, E>) {
    if let Ok(r) = output {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

impl<F, B, R, E> Future for DrainFuture<F, B>
where
    F: Future<Output = Result<Response<R>, E>>,
    B: Body + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                DrainProj::Running { fut, slot, expect_continue, limit, time } => {
                    let mut output = ready!(fut.poll(cx));
                    let Some(slot) = slot.take() else {
                        return Poll::Ready(output);
                    };
                    let Some(body) = slot.take() else {
                        // Read to its end, or still held by the service: nothing to drain.
                        return Poll::Ready(output);
                    };
                    if body.is_end_stream() {
                        return Poll::Ready(output);
                    }
                    let polled = slot.polled.load(std::sync::atomic::Ordering::Relaxed);
                    let too_long = body.size_hint().lower() > *limit;
                    if (*expect_continue && !polled) || too_long {
                        // Not asked for (it may never come), or more than is worth reading.
                        tracing::debug!(too_long, "request body left unread: closing the connection");
                        close(&mut output);
                        return Poll::Ready(output);
                    }
                    let (left, deadline) = (*limit, Box::pin(tokio::time::sleep(*time)));
                    self.set(DrainFuture::Draining { response: Some(output), body, left, deadline });
                }
                DrainProj::Draining { response, body, left, deadline } => {
                    let keep = loop {
                        match Pin::new(&mut *body).poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                let n = frame.data_ref().map_or(0, |d| d.remaining() as u64);
                                match left.checked_sub(n) {
                                    Some(l) => *left = l,
                                    None => break false,
                                }
                                if body.is_end_stream() {
                                    break true;
                                }
                            }
                            Poll::Ready(None) => break true,
                            Poll::Ready(Some(Err(_))) => break false,
                            Poll::Pending => {
                                ready!(deadline.as_mut().poll(cx));
                                break false;
                            }
                        }
                    };
                    let Some(mut output) = response.take() else {
                        return Poll::Pending;
                    };
                    if !keep {
                        tracing::debug!("request body not drained: closing the connection");
                        close(&mut output);
                    }
                    self.set(DrainFuture::Done);
                    return Poll::Ready(output);
                }
                DrainProj::Done => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;
    use tower::ServiceExt;

    type Chunks =
        StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    fn chunks(n: usize, size: usize) -> Chunks {
        let v: Vec<_> = (0..n).map(|_| Ok(Frame::data(Bytes::from(vec![0u8; size])))).collect();
        StreamBody::new(futures_util::stream::iter(v))
    }

    async fn refuse<B>(_req: Request<RequestBody<B>>) -> Result<Response<()>, Infallible> {
        Ok(Response::new(()))
    }

    fn closes<B>(r: &Response<B>) -> bool {
        r.headers().get(header::CONNECTION).is_some_and(|v| v == "close")
    }

    #[tokio::test]
    async fn an_unread_body_within_the_limit_is_drained() {
        let r = Drain::new(tower::service_fn(refuse)).oneshot(Request::new(chunks(4, 1000))).await.unwrap();
        assert!(!closes(&r));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_closes_the_connection() {
        let svc = Drain::new(tower::service_fn(refuse)).limit(3000);
        let r = svc.oneshot(Request::new(chunks(4, 1000))).await.unwrap();
        assert!(closes(&r));
        // A declared length past the limit is not read at all.
        let svc = Drain::new(tower::service_fn(refuse)).limit(10);
        let r = svc.oneshot(Request::new(Full::new(Bytes::from_static(b"more than ten")))).await.unwrap();
        assert!(closes(&r));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_closes_the_connection_after_the_drain_time() {
        let stalled = StreamBody::new(futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>());
        let svc = Drain::new(tower::service_fn(refuse)).time(Duration::from_secs(1));
        let r = svc.oneshot(Request::new(stalled)).await.unwrap();
        assert!(closes(&r));
    }

    #[tokio::test]
    async fn a_body_the_handler_read_is_left_alone() {
        let read_all = tower::service_fn(|req: Request<RequestBody<Chunks>>| async move {
            let n = req.into_body().collect().await.unwrap().to_bytes().len();
            Ok::<_, Infallible>(Response::new(n))
        });
        let svc = Drain::new(read_all).limit(10);
        let r = svc.oneshot(Request::new(chunks(4, 1000))).await.unwrap();
        assert_eq!(*r.body(), 4000);
        assert!(!closes(&r));
    }

    #[tokio::test]
    async fn an_unsolicited_expect_continue_body_closes_the_connection() {
        let req = Request::builder().header("expect", "100-continue").body(chunks(1, 10)).unwrap();
        let r = Drain::new(tower::service_fn(refuse)).oneshot(req).await.unwrap();
        assert!(closes(&r));
    }

    #[tokio::test]
    async fn http2_requests_pass_through() {
        let req = Request::builder().version(Version::HTTP_2).body(chunks(4, 1000)).unwrap();
        let r = Drain::new(tower::service_fn(refuse)).limit(10).oneshot(req).await.unwrap();
        assert!(!closes(&r));
    }
}
