//! [`Validation`], the service of [`ValidationLayer`]: answers
//! `POST /validate-image` and `POST /mutate-image` and passes every other request on.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use donjon_core::claim::{Claim, Claimed, Claiming};
use donjon_core::{Body, BoxError, Store, StoreError};

use crate::mutate::Mutator;
use crate::policy::{Decision, Policy};
use crate::review::{self, Review};
use crate::ValidationLayer;

/// The validating webhook's path (Trow's).
pub const VALIDATE_PATH: &str = "/validate-image";
/// The mutating webhook's path (Trow's).
pub const MUTATE_PATH: &str = "/mutate-image";

/// What every service of the layer shares.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) policy: Policy,
    pub(crate) mutator: Option<Mutator>,
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) max_body: usize,
}

/// See [`ValidationLayer`].
pub type Validation<S> = Claiming<ValidationLayer, S>;

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(Bytes::from(message + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn json(value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Body::from(Bytes::from(bytes)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

impl Shared {
    /// The policy's decision on `image`, with the store consulted where the policy asks.
    pub(crate) async fn decide(&self, image: &str) -> Decision {
        let d = self.policy.decide(image);
        let Some((repo, reference)) = d.must_exist.clone() else { return d };
        let Some(store) = &self.store else { return d };
        match store.manifest_get(&repo, &reference).await {
            Ok(_) => Decision { must_exist: None, ..d },
            Err(StoreError::ManifestUnknown(_) | StoreError::NameUnknown(_)) => d.missing(),
            Err(e) => {
                let normal = d.normal.clone().unwrap_or_else(|| image.to_string());
                Decision {
                    allowed: false,
                    reason: format!("{normal} could not be looked up in this registry: {e}"),
                    must_exist: None,
                    ..d
                }
            }
        }
    }

    /// The answer to a review at `/validate-image`.
    async fn validate(&self, review: &Review) -> Value {
        let Some(object) = review.object.as_ref().filter(|_| review.operation != "DELETE") else {
            return review.answer(true, None, None);
        };
        let found = match review::images(&review.kind, object) {
            Ok(f) => f,
            Err(e) => return review.answer(false, Some((400, &e)), None),
        };
        let mut refused = vec![];
        for at in &found {
            let d = self.decide(&at.image).await;
            if !d.allowed {
                let container = if at.container.is_empty() {
                    String::new()
                } else {
                    format!("container {:?}: ", at.container)
                };
                refused.push(format!("{container}{}", d.reason));
            }
        }
        if refused.is_empty() {
            return review.answer(true, None, None);
        }
        tracing::info!(uid = %review.uid, kind = %review.kind, refused = refused.len(), "admission refused: {}", refused.join("; "));
        let message = match refused.len() {
            1 => format!("image refused: {}", refused[0]),
            n => format!("{n} images refused: {}", refused.join("; ")),
        };
        review.answer(false, Some((403, &message)), None)
    }

    /// The answer to a review at `/mutate-image`: always allowed (refusing is the validating
    /// webhook's work), with the rewrites as a patch.
    fn mutate(&self, mutator: &Mutator, review: &Review) -> Value {
        let Some(object) = review.object.as_ref().filter(|_| review.operation != "DELETE") else {
            return review.answer(true, None, None);
        };
        match review::images(&review.kind, object) {
            Ok(found) => review.answer(true, None, Some(&mutator.patch(&found))),
            // Leaves the object alone; the validating webhook says what is wrong with it.
            Err(_) => review.answer(true, None, None),
        }
    }
}

async fn handle<B>(shared: Arc<Shared>, mutate: bool, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if req.method() != Method::POST {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} takes POST with an AdmissionReview", req.uri().path()),
        );
        resp.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return resp;
    }
    let limit = shared.max_body;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large =
        || text(StatusCode::PAYLOAD_TOO_LARGE, format!("the AdmissionReview is larger than {limit} bytes"));
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let body = match http_body_util::Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("the request body could not be read: {e}")),
    };
    let review = match Review::parse(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let answer = match (&shared.mutator, mutate) {
        (Some(m), true) => shared.mutate(m, &review),
        _ => shared.validate(&review).await,
    };
    json(&answer)
}

impl<S, B> Claim<S, B> for ValidationLayer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn claim(&self, req: Request<B>, _: &S) -> Claimed<B> {
        let mutate = match req.uri().path() {
            VALIDATE_PATH => false,
            MUTATE_PATH if self.shared.mutator.is_some() => true,
            _ => return Claimed::Pass(req),
        };
        Claimed::answer(handle(self.shared.clone(), mutate, req))
    }
}
