//! [`Events`]: the service of [`EventsLayer`](crate::EventsLayer).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, HeaderName, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use donjon_core::{Body, ClientConn, Route};

use crate::{header_str, Notifier, Seen};

/// See [`EventsLayer`].
#[derive(Clone, Debug)]
pub struct Events<S> {
    pub(crate) inner: S,
    pub(crate) notifier: Notifier,
}

impl<S, B> Service<Request<B>> for Events<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = EventsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let actor = donjon_core::ActorSlot::default();
        req.extensions_mut().insert(actor.clone());
        let h = req.headers();
        let seen = Seen {
            method: req.method().clone(),
            route: None,
            query: req.uri().query().map(str::to_string),
            content_type: header_str(h, header::CONTENT_TYPE),
            content_length: header_str(h, header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
            addr: req.extensions().get::<ClientConn>().map(|c| c.peer.to_string()),
            host: header_str(h, header::HOST),
            user_agent: header_str(h, header::USER_AGENT),
            request_id: header_str(h, HeaderName::from_static("x-request-id")),
            actor,
        };
        EventsFuture { fut: self.inner.call(req), seen: Some(seen), notifier: self.notifier.clone() }
    }
}

pin_project! {
    /// The future of [`Events`].
    pub struct EventsFuture<F> {
        #[pin]
        fut: F,
        seen: Option<Seen>,
        notifier: Notifier,
    }
}

impl<F> Future for EventsFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.fut.poll(cx))?;
        if let Some(mut seen) = this.seen.take() {
            seen.route = resp.extensions().get::<Route>().cloned();
            if let Some(e) = this.notifier.event(&seen, resp.status(), resp.headers()) {
                this.notifier.publish(e);
            }
        }
        Poll::Ready(Ok(resp))
    }
}
