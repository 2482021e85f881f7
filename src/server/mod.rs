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
//! use donjon::{server, stack, FsStore, Registry};
//!
//! let store = FsStore::open("./data").await?;
//! let svc = stack::wrap(Registry::builder(Arc::new(store)).build());
//! let listener = server::bind("127.0.0.1:8000".parse().unwrap()).await?;
//! server::serve(listener, None, svc, server::shutdown_signal(), std::time::Duration::from_secs(30)).await
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
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::BoxError;

pub mod drain;
pub mod linger;

use drain::{Drain, RequestBody};
use linger::Linger;

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
/// http/1.1.
pub fn tls_acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no certificate found", cert.display()),
        ));
    }
    let key_der = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", key.display())))?
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: no private key found", key.display()))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS certificate/key: {e}")))?;
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

/// Serves `svc` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// connections in flight finish their transfers, for at most `drain`.
pub async fn serve<S, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    svc: S,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> io::Result<()>
where
    S: Service<Request<RequestBody<Incoming>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let hyper_svc = TowerToHyperService::new(Drain::new(svc.clone()));
        let stream = Linger::new(stream);
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), hyper_svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        };
                    let conn = builder.serve_connection(TokioIo::new(tls), hyper_svc).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining connections for up to {drain:?}");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
    Ok(())
}
