//! `donjon healthcheck`: asks a running donjon for `/healthz` and exits 0 on a 200, 1
//! otherwise, so that an image with nothing but the binary has a health command
//! (`HEALTHCHECK`, `podman run --health-cmd`, a systemd `ExecStartPost`).
//!
//! It reads the same flags, environment and configuration file as the server, and asks the
//! address the server listens on (loopback when it listens on all interfaces). Flags given to
//! the server alone (after an image's name) are not seen: give them to the health command too,
//! or put them in the configuration. Over TLS it
//! trusts exactly the configured certificate, whatever names it holds: the probe talks to the
//! server it shares a configuration with, not to a host a name could redirect.
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! let addr = "127.0.0.1:8000".parse().unwrap();
//! let status = donjon::healthcheck::probe(addr, None, "/healthz", std::time::Duration::from_secs(3)).await?;
//! assert_eq!(status, 200);
//! # Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

/// The addresses to probe, in turn, for a server bound to `bind`: the same port on loopback
/// when it listens on every interface (for `[::]`, `[::1]` and then 127.0.0.1, which a
/// dual-stack listener also takes, for a container without IPv6).
pub fn targets(bind: SocketAddr) -> Vec<SocketAddr> {
    let port = bind.port();
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)],
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        ],
        _ => vec![bind],
    }
}

/// `GET path` on `addr` (over TLS, trusting only `cert`'s first certificate, when given):
/// the response's status code, or why there was none within `timeout`.
pub async fn probe(
    addr: SocketAddr,
    cert: Option<&Path>,
    path: &str,
    timeout: Duration,
) -> Result<u16, String> {
    let connector = cert.map(pinned_connector).transpose()?;
    tokio::time::timeout(timeout, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        match connector {
            None => ask(tcp, addr, path).await,
            Some(c) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let tls = c.connect(name, tcp).await.map_err(|e| format!("TLS with {addr}: {e}"))?;
                ask(tls, addr, path).await
            }
        }
    })
    .await
    .map_err(|_| format!("no answer from {addr} within {timeout:?}"))?
}

/// One HTTP/1.1 request (hyper's client on the connection); the status code of the answer.
async fn ask(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    addr: SocketAddr,
    path: &str,
) -> Result<u16, String> {
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "donjon-healthcheck")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("{path}: {e}"))?;
    let resp = send.send_request(req).await.map_err(|e| format!("{addr} did not answer HTTP: {e}"))?;
    Ok(resp.status().as_u16())
}

/// A TLS connector that accepts the one certificate in `cert` (its first), and no other.
fn pinned_connector(cert: &Path) -> Result<tokio_rustls::TlsConnector, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let leaf = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .ok_or_else(|| format!("{}: no certificate", cert.display()))?
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(donjon_core::https::pinned_only(leaf)?)))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[test]
    fn all_interfaces_are_probed_on_loopback() {
        let t = |s: &str| targets(s.parse().unwrap()).iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(t("0.0.0.0:8000"), ["127.0.0.1:8000"]);
        assert_eq!(t("[::]:8000"), ["[::1]:8000", "127.0.0.1:8000"]);
        assert_eq!(t("10.1.2.3:5000"), ["10.1.2.3:5000"]);
    }

    #[tokio::test]
    async fn the_status_line_is_read() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
                "SSH-2.0-OpenSSH\r\n",
            ] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let t = Duration::from_secs(5);
        assert_eq!(probe(addr, None, "/healthz", t).await, Ok(200));
        assert_eq!(probe(addr, None, "/healthz", t).await, Ok(503));
        let err = probe(addr, None, "/healthz", t).await.unwrap_err();
        assert!(err.contains("did not answer HTTP"), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error_naming_the_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let err = probe(addr, None, "/healthz", Duration::from_secs(5)).await.unwrap_err();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
