//! Listeners, TLS and graceful shutdown: HTTP/1.1 and HTTP/2 (h2c, and h2 over TLS by ALPN) with
//! hyper-util's auto connection builder.
//!
//! The server owns what keeps connections healthy, so that no handler has to: an answer sent
//! before the request body was read leaves an HTTP/1.1 connection usable ([`drain`]), and a
//! connection closed after such an answer is read from a moment longer, so that the client can
//! read the answer ([`linger`]).
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use donjon::{middleware, server, FsStore, Registry};
//!
//! let store = FsStore::open("./data").await?;
//! let svc = middleware::wrap(Registry::builder(Arc::new(store)).build(), vec![]);
//! let listener = server::bind("127.0.0.1:8000".parse().unwrap()).await?;
//! server::serve(listener, None, svc, server::shutdown_signal(), server::Options::default()).await
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::BoxError;

pub mod conn;
pub mod drain;
pub mod linger;
mod options;
mod tls;

use conn::{ConnState, Connections, TimedBody, Tracked, Verdict, Watched};
use drain::{Drain, RequestBody};
use linger::Linger;
pub use options::{raise_nofile_limit, Options};

/// Binds a listener, with a message that says what went wrong (port taken, no permission).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::AddrInUse => {
                "the address is already in use (is another registry running?)".to_string()
            }
            io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_string()
            }
            io::ErrorKind::AddrNotAvailable => "that address is not on this machine".to_string(),
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), format!("cannot listen on {addr}: {why}"))
    })
}

/// Loads a PEM certificate chain and private key into a TLS acceptor that offers h2 and
/// http/1.1. The files are watched: when either changes (a renewal by cert-manager or certbot,
/// a Kubernetes Secret updated in place), new handshakes use the new pair, without a restart.
/// A pair that does not load is logged and the one in use stays.
pub fn tls_acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = tls::Reloading::new(cert, key, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The request body the served service sees: hyper's, with the body timeout
/// ([`conn::TimedBody`]) and the early-answer drain ([`drain::RequestBody`]).
pub type ServerBody = RequestBody<TimedBody<Incoming>>;

/// Serves `svc` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// connections in flight finish their transfers, for at most `options.drain_timeout`.
pub async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    svc: S,
    shutdown: impl Future<Output = ()>,
    options: Options,
) -> io::Result<()>
where
    S: Service<Request<ServerBody>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    options.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let options = Arc::new(options);
    let builder = Arc::new(builder(&options));
    let conns = Connections::new(options.connection_limit());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection task holds a sender; when all are gone, the drain is over.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let room = tokio::select! {
            room = conns.room() => room,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    if is_descriptor_exhaustion(&e) {
                        // Make room: connections with nothing in flight go, partial request
                        // heads first, a batch at a time (each accept that fails is a pause).
                        conns.shed(SHED_BATCH);
                    }
                    backoff.failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        backoff.succeeded();
        let slot = conns.register(room);
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let state = slot.state.clone();
        let stream = Linger::new(Watched::new(stream, state.clone()));
        let conn = donjon_core::ClientConn { peer, tls: tls.is_some(), local };
        let svc = tower::ServiceExt::map_request(svc.clone(), move |mut req: Request<ServerBody>| {
            req.extensions_mut().insert(conn);
            req
        });
        let svc = Tracked::new(Drain::new(svc), state.clone(), options.body_timeout);
        let hyper_svc = TowerToHyperService::new(svc);
        let (tls, builder, options, stop, done) =
            (tls.clone(), builder.clone(), options.clone(), stop_rx.clone(), done_tx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _done = done;
            match tls {
                None => drive(&builder, TokioIo::new(stream), hyper_svc, &state, &options, stop, peer).await,
                Some(acceptor) => {
                    let accept = acceptor.accept(stream);
                    let tls = tokio::select! {
                        r = tokio::time::timeout(options.tls_handshake_timeout, accept) => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        },
                        () = state.shed_requested() => return,
                    };
                    drive(&builder, TokioIo::new(tls), hyper_svc, &state, &options, stop, peer).await
                }
            }
        });
    }
    drop(listener);
    let drain = options.drain_timeout;
    tracing::info!("shutting down: draining connections for up to {drain:?}");
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(drain, done_rx.recv()).await.is_err() {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
    Ok(())
}

/// hyper-util's auto (HTTP/1.1 and HTTP/2) connection builder with `options` applied.
fn builder(o: &Options) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(o.header_read_timeout)
        .max_headers(o.max_headers)
        .max_buf_size(o.max_header_bytes);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(o.h2_max_concurrent_streams)
        .max_header_list_size(o.h2_max_header_list_size)
        .max_pending_accept_reset_streams(o.h2_max_pending_accept_reset_streams)
        .keep_alive_interval(o.h2_keep_alive_interval)
        .keep_alive_timeout(o.h2_keep_alive_timeout);
    b
}

/// Runs one connection until it ends, closing it when it has been idle for the idle timeout,
/// when its client stopped reading for the send timeout, when the connection limit needs its
/// room, or (gracefully) when the server stops.
async fn drive<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    svc: S,
    state: &ConnState,
    options: &Options,
    mut stop: tokio::sync::watch::Receiver<bool>,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// After a graceful close began, how long the connection may take to end.
    const CLOSE_GRACE: Duration = Duration::from_secs(1);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut closing: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    loop {
        let check = tokio::time::sleep_until(state.next_check(options));
        let grace = tokio::time::sleep_until(closing.unwrap_or_else(tokio::time::Instant::now));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                // The server's drain timeout bounds this one.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = state.shed_requested(), if closing.is_none() => {
                // A partial request head gets no answer however long it waits: its room now.
                if state.reading_head() {
                    tracing::debug!(%peer, "making room: closing a connection still sending its request head");
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            () = check => match state.check(options) {
                Err(Verdict::Stalled) => {
                    tracing::debug!(%peer, "closing a connection whose client stopped reading (send timeout)");
                    return;
                }
                Err(Verdict::Idle) if closing.is_none() => {
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ => {}
            },
            () = grace, if closing.is_some() => return,
        }
    }
}

/// How many connections an `accept` that ran out of descriptors asks to close.
const SHED_BATCH: usize = 16;

fn is_descriptor_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
}

/// `accept` errors are waited out with a growing pause (5 ms doubling to 1 s, as Go's server
/// does) and logged at most every 5 s, with the count of those not logged.
#[derive(Debug, Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
    last_log: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    async fn failed(&mut self, e: &io::Error) {
        let now = tokio::time::Instant::now();
        if self.last_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5)) {
            tracing::warn!(error = %e, suppressed = self.unlogged, "accept failed; backing off");
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        let pause = self.pause.map_or(Duration::from_millis(5), |p| (p * 2).min(Duration::from_secs(1)));
        self.pause = Some(pause);
        tokio::time::sleep(pause).await;
    }

    fn succeeded(&mut self) {
        self.pause = None;
    }
}
