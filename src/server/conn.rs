//! One connection's life, and the defences that keep a few misbehaving clients from taking the
//! server down: an idle timeout for connections with no request in flight (also before the
//! protocol is known, which hyper's own header timeout does not cover), a body timeout for
//! request bodies that stop arriving, a send timeout for clients that stop reading, and a
//! connection limit that sheds the longest-idle connection rather than turning new ones away.
//!
//! Every connection has a [`ConnState`]: requests in flight, since when it has been idle, and
//! since when a write has been waiting on the client. [`Watched`] (the transport) and
//! [`Tracked`] (the service) keep it current; the connection's task looks at it when the next
//! deadline is due, so an idle or stalled connection costs one timer and no polling.
//!
//! ```
//! use std::sync::Arc;
//! use donjon::server::{conn::ConnState, Options};
//!
//! let state = Arc::new(ConnState::new());
//! let o = Options::default();
//! assert!(state.check(&o).is_ok(), "a fresh connection is fine until its idle timeout");
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::Options;
use crate::BoxError;

const NOT_BLOCKED: u64 = u64::MAX;

/// What a connection is doing, shared by its transport, its service and its task.
#[derive(Debug)]
pub struct ConnState {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `start` when the last request ended (or the connection began).
    idle_since: AtomicU64,
    /// Milliseconds since `start` when a write began to wait on the client, or `NOT_BLOCKED`.
    blocked_since: AtomicU64,
    /// Milliseconds since `start` when the first bytes arrived on a connection that has not
    /// had a request yet, or `NOT_BLOCKED`: it is reading its first request head. (After a
    /// first request, bytes with none in flight may be an HTTP/2 ping or window update, or
    /// a response's last bytes may still be on their way: such a connection closes
    /// gracefully.)
    head_since: AtomicU64,
    /// Whether a request has come on this connection.
    had_request: AtomicBool,
    shedding: AtomicBool,
    shed: Notify,
}

/// Why a connection must go.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No request in flight for the idle timeout.
    Idle,
    /// The client has read nothing for the send timeout.
    Stalled,
}

impl Default for ConnState {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnState {
    /// A connection that starts now, idle.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            blocked_since: AtomicU64::new(NOT_BLOCKED),
            head_since: AtomicU64::new(NOT_BLOCKED),
            had_request: AtomicBool::new(false),
            shedding: AtomicBool::new(false),
            shed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NOT_BLOCKED - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.had_request.store(true, Ordering::Release);
        self.head_since.store(NOT_BLOCKED, Ordering::Release);
    }

    /// Bytes arrived: on a connection that has had no request, they begin its first head.
    fn read_some(&self) {
        if !self.had_request.load(Ordering::Acquire) && self.head_since.load(Ordering::Acquire) == NOT_BLOCKED
        {
            self.head_since.store(self.now(), Ordering::Release);
        }
    }

    /// Whether the connection is still reading its first request head (part of one came, no
    /// request yet): nothing has been or will be answered on it, so closing it at once loses
    /// nothing.
    pub fn reading_head(&self) -> bool {
        !self.had_request.load(Ordering::Acquire) && self.head_since.load(Ordering::Acquire) != NOT_BLOCKED
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now(), Ordering::Release);
        }
    }

    fn write_waits(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == NOT_BLOCKED {
            self.blocked_since.store(self.now(), Ordering::Relaxed);
        }
    }

    fn write_moved(&self) {
        if self.blocked_since.load(Ordering::Relaxed) != NOT_BLOCKED {
            self.blocked_since.store(NOT_BLOCKED, Ordering::Relaxed);
        }
    }

    /// Whether the connection may go on; `Err` says why not.
    pub fn check(&self, o: &Options) -> Result<(), Verdict> {
        let now = self.now();
        let blocked = self.blocked_since.load(Ordering::Relaxed);
        if blocked != NOT_BLOCKED && now.saturating_sub(blocked) >= millis(o.send_timeout) {
            return Err(Verdict::Stalled);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && now.saturating_sub(self.idle_since.load(Ordering::Acquire)) >= millis(o.idle_timeout)
        {
            return Err(Verdict::Idle);
        }
        Ok(())
    }

    /// When [`ConnState::check`] may next find something: the earliest deadline running now,
    /// and no later than the shorter timeout from now (a deadline that starts later cannot
    /// expire sooner than that).
    pub fn next_check(&self, o: &Options) -> Instant {
        let mut at = Instant::now() + o.idle_timeout.min(o.send_timeout);
        let blocked = self.blocked_since.load(Ordering::Relaxed);
        if blocked != NOT_BLOCKED {
            at = at.min(self.at(blocked) + o.send_timeout);
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            at = at.min(self.at(self.idle_since.load(Ordering::Acquire)) + o.idle_timeout);
        }
        at
    }

    /// How readily the connection gives up its room, when it can (no request in flight, not
    /// already going): connections reading a head first, oldest head first; then the idle
    /// ones, longest idle first.
    fn shed_rank(&self) -> Option<(bool, u64)> {
        if self.in_flight.load(Ordering::Acquire) != 0 || self.shedding.load(Ordering::Relaxed) {
            return None;
        }
        let now = self.now();
        let head = self.head_since.load(Ordering::Acquire);
        Some(if head != NOT_BLOCKED {
            (true, now.saturating_sub(head))
        } else {
            (false, now.saturating_sub(self.idle_since.load(Ordering::Acquire)))
        })
    }

    /// Asks the connection to close (gracefully: it finishes nothing, it has nothing in flight).
    fn shed(&self) {
        self.shedding.store(true, Ordering::Relaxed);
        self.shed.notify_one();
    }

    /// Resolves once the connection was asked to make room.
    pub async fn shed_requested(&self) {
        self.shed.notified().await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(NOT_BLOCKED - 1)
}

/// The live connections, and the limit on their number.
#[derive(Debug)]
pub struct Connections {
    limit: Arc<Semaphore>,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
}

/// A connection's place among the [`Connections`]; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    conns: Arc<Connections>,
    _permit: OwnedSemaphorePermit,
    /// The connection's state.
    pub state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Connections {
    /// At most `limit` connections at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: Arc::new(Semaphore::new(limit.max(1))),
            live: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        })
    }

    /// Room for one more connection, taken before `accept`. At the limit, the longest-idle
    /// connection is asked to close; when none is idle, this waits (asking again every second)
    /// until one ends.
    pub async fn room(&self) -> OwnedSemaphorePermit {
        match self.limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => loop {
                self.shed_idle();
                tokio::select! {
                    p = self.limit.clone().acquire_owned() => match p {
                        Ok(p) => break p,
                        // never closed; if it were, wait for the shutdown to end the loop
                        Err(_) => std::future::pending::<()>().await,
                    },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            },
        }
    }

    /// Registers a connection just accepted into the room taken for it; it starts idle, now.
    pub fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(id, state.clone());
        Slot { id, conns: self.clone(), _permit: permit, state }
    }

    /// Asks the connection with no request in flight that has waited longest to close
    /// (one reading a request head before an idle one); `false` when every connection has a
    /// request in flight.
    pub fn shed_idle(&self) -> bool {
        self.shed(1) > 0
    }

    /// Asks up to `n` connections to close, in [`Connections::shed_idle`]'s order; how many.
    pub fn shed(&self, n: usize) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut ranked: Vec<((bool, u64), &Arc<ConnState>)> =
            live.values().filter_map(|s| Some((s.shed_rank()?, s))).collect();
        let n = n.min(ranked.len());
        if n == 0 {
            return 0;
        }
        if n < ranked.len() {
            ranked.select_nth_unstable_by(n - 1, |a, b| b.0.cmp(&a.0));
        }
        for (_, s) in &ranked[..n] {
            s.shed();
        }
        tracing::debug!(n, "making room: closing connections with no request in flight");
        n
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A transport that tells its [`ConnState`] when writes wait on the client and when they move.
#[derive(Debug)]
pub struct Watched<T> {
    io: T,
    state: Arc<ConnState>,
}

impl<T> Watched<T> {
    /// Watches `io` for `state`.
    pub fn new(io: T, state: Arc<ConnState>) -> Self {
        Self { io, state }
    }

    fn note<R>(&self, r: &Poll<io::Result<R>>) {
        match r {
            Poll::Pending => self.state.write_waits(),
            Poll::Ready(_) => self.state.write_moved(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_some();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.note(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Counts a connection's requests in flight (until their response bodies end) and gives each
/// request body the body timeout.
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
    body_timeout: Duration,
}

impl<S> Tracked<S> {
    /// Tracks `inner`'s requests in `state`.
    pub fn new(inner: S, state: Arc<ConnState>, body_timeout: Duration) -> Self {
        Self { inner, state, body_timeout }
    }
}

/// Ends a request's time in flight when dropped.
#[derive(Debug)]
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl<S, B, R> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<TimedBody<B>>, Response = Response<R>>,
    B: Body + Unpin,
{
    type Response = Response<GuardedBody<R>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.state.begin();
        let guard = InFlight(self.state.clone());
        let timeout = self.body_timeout;
        let req = req.map(|body| TimedBody { body, timeout, timer: None, timed_out: false });
        TrackedFuture { fut: self.inner.call(req), guard: Some(guard) }
    }
}

pin_project! {
    /// The future of [`Tracked`].
    pub struct TrackedFuture<F> {
        #[pin]
        fut: F,
        guard: Option<InFlight>,
    }
}

impl<F, R, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<GuardedBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.fut.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(out.map(|r| r.map(|body| GuardedBody { body, _guard: guard })))
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it ends or is dropped.
    pub struct GuardedBody<B> {
        #[pin]
        body: B,
        _guard: Option<InFlight>,
    }
}

impl<B: Body<Data = Bytes>> Body for GuardedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The request body with the body timeout: when nothing arrives for that long, it fails (and
/// keeps failing), so the handler ends the request with what arrived.
pub struct TimedBody<B> {
    body: B,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<B> std::fmt::Debug for TimedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedBody").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// The error of a request body that stopped arriving.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyTimeout(pub Duration);

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Some(Err(BodyTimeout(this.timeout).into())));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                // Disarmed until the next wait; re-armed from that moment.
                if let Some(t) = this.timer.as_mut() {
                    t.as_mut().reset(far_future());
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.timeout;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() > deadline + this.timeout {
                    timer.as_mut().reset(deadline);
                }
                ready!(timer.as_mut().poll(cx));
                this.timed_out = true;
                tracing::debug!(timeout = ?this.timeout, "request body timed out");
                Poll::Ready(Some(Err(BodyTimeout(this.timeout).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.timed_out && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    #[tokio::test(start_paused = true)]
    async fn idle_and_stalled_verdicts() {
        let o = Options {
            idle_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(5),
            ..Options::default()
        };
        let s = ConnState::new();
        assert_eq!(s.next_check(&o), s.start + Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(s.check(&o).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.check(&o), Err(Verdict::Idle));
        // A request in flight is never idle; a write that waits for 5 s is stalled.
        s.begin();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(s.check(&o).is_ok());
        s.write_waits();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(s.check(&o).is_ok());
        s.write_moved();
        s.write_waits();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(s.check(&o), Err(Verdict::Stalled));
        s.write_moved();
        s.end();
        assert!(s.check(&o).is_ok(), "idle again from the end of the request");
    }

    #[tokio::test(start_paused = true)]
    async fn the_idlest_connection_makes_room() {
        let conns = Connections::new(2);
        let a = conns.register(conns.room().await);
        tokio::time::advance(Duration::from_secs(5)).await;
        let b = conns.register(conns.room().await);
        b.state.begin();
        let waiting = tokio::spawn({
            let conns = conns.clone();
            async move { conns.register(conns.room().await) }
        });
        // `a` is asked to go, not `b` (busy); its end frees the room.
        tokio::time::timeout(Duration::from_secs(1), a.state.shed_requested()).await.unwrap();
        drop(a);
        let c = waiting.await.unwrap();
        assert_eq!(conns.len(), 2);
        drop((b, c));
        assert!(conns.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_fails_and_a_slow_one_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|f| (f, rx)) });
        let mut body = TimedBody {
            body: StreamBody::new(Box::pin(stream)),
            timeout: Duration::from_secs(3),
            timer: None,
            timed_out: false,
        };
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await.unwrap();
            }
            // then silence, with the sender kept
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let mut got = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("ended"),
            }
        };
        assert_eq!(got, 5, "a frame every 2 s is slow but moving");
        assert!(err.to_string().contains("sent nothing"), "{err}");
        assert!(body.frame().await.unwrap().is_err(), "and it stays failed");
        feeder.abort();
    }
}
