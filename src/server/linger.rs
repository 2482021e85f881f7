//! Lingering close: after the server has sent its last response and shut down its side of a
//! connection, keep reading (and discarding) for a moment before closing.
//!
//! Closing a TCP socket whose receive buffer still holds unread bytes makes the kernel send a
//! reset, and a reset destroys what the peer has not read yet — the very response that told it
//! why (a 413 for a manifest that is still arriving, say). nginx's `lingering_close` and Go's
//! server read what is left for a bounded time instead; so does [`Linger`]: once hyper has shut
//! the connection down (after a `Connection: close` response), dropping the transport hands it
//! to a short task that reads until the client closes, [`LINGER_IDLE`] passes without data, or
//! [`LINGER_TIME`] has passed in all. Connections dropped without a shutdown (errors, timeouts)
//! close at once: there is no answer to protect.
//!
//! ```no_run
//! # async fn f(listener: tokio::net::TcpListener) -> std::io::Result<()> {
//! use donjon::server::linger::Linger;
//!
//! let (stream, _) = listener.accept().await?;
//! let io = hyper_util::rt::TokioIo::new(Linger::new(stream));
//! # let _ = io; Ok(()) }
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The longest a closed connection is read from.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// The longest wait for more bytes while lingering.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);

/// A transport that lingers on close; see the [module docs](self).
#[derive(Debug)]
pub struct Linger<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    io: Option<T>,
    shut_down: bool,
    read_eof: bool,
}

impl<T> Linger<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps a transport.
    pub fn new(io: T) -> Self {
        Self { io: Some(io), shut_down: false, read_eof: false }
    }

    /// The transport.
    pub fn get_ref(&self) -> Option<&T> {
        self.io.as_ref()
    }

    fn io(&mut self) -> io::Result<&mut T> {
        self.io.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<T> AsyncRead for Linger<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let r = Pin::new(self.io()?).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && room && buf.filled().len() == before {
            self.read_eof = true;
        }
        r
    }
}

impl<T> AsyncWrite for Linger<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.io()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(self.io()?).poll_shutdown(cx);
        if r.is_ready() {
            self.shut_down = true;
        }
        r
    }
}

impl<T> Drop for Linger<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn drop(&mut self) {
        if !self.shut_down || self.read_eof {
            return;
        }
        let (Some(io), Ok(rt)) = (self.io.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        rt.spawn(linger(io));
    }
}

async fn linger<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) {
    let end = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let wait = (tokio::time::Instant::now() + LINGER_IDLE).min(end);
        match tokio::time::timeout_at(wait, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// The server answers and closes while the client is still sending: with lingering the
    /// client finishes sending and reads the answer; without, the reset loses it.
    async fn answer_then_close(linger: bool) -> io::Result<Vec<u8>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 100];
            let mut s = Linger::new(s);
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"refused").await.unwrap();
            s.shutdown().await.unwrap();
            if !linger {
                s.shut_down = false;
            }
        });
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(&[7u8; 100]).await?;
        server.await.map_err(io::Error::other)?;
        // The rest of a large body, sent after the server closed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(&vec![7u8; 4 << 20]).await?;
        let mut answer = vec![];
        c.read_to_end(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn the_answer_survives_a_close_while_the_client_sends() {
        assert_eq!(answer_then_close(true).await.unwrap(), b"refused");
        // Without lingering the same exchange ends in a reset.
        assert!(answer_then_close(false).await.is_err());
    }
}
