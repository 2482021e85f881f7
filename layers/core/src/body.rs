//! The response body of every donjon layer.
//!
//! Small bodies (errors, manifests, JSON listings) are held inline; streams (blobs) are boxed
//! once, where they are created.
//!
//! ```
//! use donjon_core::Body;
//! use http_body::Body as _;
//!
//! let body = Body::from("{}");
//! assert_eq!(body.size_hint().exact(), Some(2));
//! assert!(Body::empty().is_end_stream());
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, StreamBody};

/// The error type carried by streaming bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A stream of bytes, as the store hands out and takes in blob content.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// The response body type of the donjon stack.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self { kind: Kind::Full(None) }
    }

    /// A body that streams `stream`.
    pub fn from_stream(stream: ByteStream) -> Self {
        let body = StreamBody::new(stream.map_ok(Frame::data));
        Self { kind: Kind::Boxed(body.boxed_unsync()) }
    }

    /// Boxes any other body (the fallback service's, say).
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self { kind: Kind::Boxed(body.map_err(Into::into).boxed_unsync()) }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            Self::empty()
        } else {
            Self { kind: Kind::Full(Some(bytes)) }
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

/// Turns any request body into a [`ByteStream`] for the store.
pub fn into_stream<B>(body: B) -> ByteStream
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Box::pin(http_body_util::BodyDataStream::new(body).map_err(Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[tokio::test]
    async fn full_body_yields_once() {
        let body = Body::from("abc");
        assert_eq!(body.size_hint().exact(), Some(3));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abc");
    }

    #[tokio::test]
    async fn stream_body_concatenates() {
        let chunks: Vec<Result<Bytes, BoxError>> =
            vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))];
        let body = Body::from_stream(Box::pin(futures_util::stream::iter(chunks)));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abcd");
    }

    #[test]
    fn empty_string_is_end_of_stream() {
        assert!(Body::from(String::new()).is_end_stream());
    }
}
