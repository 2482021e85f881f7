use bytes::Bytes;
use donjon_core::body::into_stream;
use donjon_core::claim::{Claim, Claimed, Claiming};
use donjon_core::response::{
    header_value, parse_content_range, query_param, query_params, upload_range, DOCKER_CONTENT_DIGEST,
    DOCKER_UPLOAD_UUID, OCI_CHUNK_MIN_LENGTH, OCI_SUBJECT, OCI_TAG,
};
use donjon_core::store::{ManifestPut, StoreError};
use donjon_core::{
    manifest, Action, Algorithm, Body, BoxError, Digest, Error, ErrorCode, Name, Reference, Route, Tag,
};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::layer::Shared;
use crate::UploadLayer;

/// The service of [`UploadLayer`]: it answers every push.
pub type Upload<S> = Claiming<UploadLayer, S>;

impl<S, B> Claim<S, B> for UploadLayer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn claim(&self, req: Request<B>, _: &S) -> Claimed<B> {
        // Every push: upload sessions, mounts, manifest PUTs.
        let mine = req.extensions().get::<Route>().and_then(|r| r.action(req.method())) == Some(Action::Push);
        if !mine {
            return Claimed::Pass(req);
        }
        let shared = self.shared.clone();
        let in_flight = InFlight::start();
        Claimed::answer(async move {
            let resp = dispatch(&shared, req).await.unwrap_or_else(Error::into_response);
            drop(in_flight);
            resp
        })
    }
}

/// A push being served, counted in `donjon_upload_requests_in_flight` until it ends (or its
/// client goes away and the future is dropped).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        donjon_core::metrics::metrics().uploads_in_flight.inc();
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        donjon_core::metrics::metrics().uploads_in_flight.dec();
    }
}

use donjon_core::response::{empty, HandlerResult as HResult};

async fn dispatch<B>(s: &Shared, req: Request<B>) -> HResult
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Some(route) = req.extensions().get::<Route>().cloned() else {
        return Err(Error::method_not_allowed());
    };
    match (route, req.method().clone()) {
        (Route::UploadStart { name }, _) => start(s, &name, req).await,
        (Route::Upload { name, id }, Method::GET) => {
            let size = s.store.upload_size(&name, &id).await?;
            Ok(progress(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Route::Upload { name, id }, Method::PATCH) => patch(s, &name, &id, req).await,
        (Route::Upload { name, id }, Method::PUT) => finish(s, &name, &id, req).await,
        (Route::Upload { name, id }, Method::DELETE) => {
            s.store.upload_cancel(&name, &id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Route::Manifest { name, reference }, _) => put_manifest(s, &name, &reference, req).await,
        _ => Err(Error::method_not_allowed()),
    }
}

fn session_location(name: &Name, id: &str) -> HeaderValue {
    header_value(&format!("/v2/{name}/blobs/uploads/{id}"))
}

/// A session's state: `Location`, `Range`, `Docker-Upload-UUID`.
fn progress(status: StatusCode, name: &Name, id: &str, size: u64) -> Response<Body> {
    let mut r = empty(status);
    let h = r.headers_mut();
    h.insert(header::LOCATION, session_location(name, id));
    h.insert(header::RANGE, upload_range(size));
    h.insert(DOCKER_UPLOAD_UUID, header_value(id));
    r
}

fn blob_created(name: &Name, digest: &Digest) -> Response<Body> {
    let mut r = empty(StatusCode::CREATED);
    let h = r.headers_mut();
    h.insert(header::LOCATION, header_value(&format!("/v2/{name}/blobs/{digest}")));
    h.insert(DOCKER_CONTENT_DIGEST, header_value(digest.as_str()));
    r
}

fn digest_param(uri: &http::Uri) -> HResult<Option<Digest>> {
    match query_param(uri, "digest") {
        None => Ok(None),
        Some(d) => d.parse().map(Some).map_err(|e: donjon_core::digest::DigestError| {
            Error::new(ErrorCode::DigestInvalid, e.to_string())
        }),
    }
}

/// `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>`), inclusive.
fn content_range(headers: &HeaderMap) -> HResult<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        Error::new(ErrorCode::BlobUploadInvalid, "invalid Content-Range: expected <start>-<end>")
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    };
    let s = v.to_str().map_err(|_| bad())?;
    parse_content_range(s).map(Some).ok_or_else(bad)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn is_empty<B: http_body::Body>(body: &B, headers: &HeaderMap) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0) || content_length(headers) == Some(0)
}

async fn start<B>(s: &Shared, name: &Name, req: Request<B>) -> HResult
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let uri = req.uri().clone();
    let algorithm = match query_param(&uri, "digest-algorithm") {
        None => None,
        Some(a) => Some(Algorithm::from_name(&a).ok_or_else(|| {
            Error::new(
                ErrorCode::DigestInvalid,
                format!("unsupported digest-algorithm {a:?}: sha256 and sha512 are supported"),
            )
        })?),
    };
    if let Some(mount) = query_param(&uri, "mount") {
        let digest: Digest = mount.parse().map_err(|e: donjon_core::digest::DigestError| {
            Error::new(ErrorCode::DigestInvalid, e.to_string())
        })?;
        // Mount only from a repository that links the blob; without `from`, no search across
        // repositories (it would leak other repositories' content): a plain session instead.
        if let Some(from) = query_param(&uri, "from") {
            let from: Name = from.parse().map_err(|e: donjon_core::name::NameError| {
                Error::new(ErrorCode::NameInvalid, e.to_string())
            })?;
            // A caller who may not pull `from` gets a plain session, as the spec allows for any
            // mount that is not made: nothing tells it whether the blob is there.
            let may_pull = req
                .extensions()
                .get::<donjon_core::Principal>()
                .is_none_or(|p| p.may(&from, donjon_core::route::Action::Pull));
            if may_pull && s.store.blob_size(&from, &digest).await.is_ok() {
                s.store.blob_link(name, &digest).await?;
                return Ok(blob_created(name, &digest));
            }
        }
    } else if let Some(digest) = digest_param(&uri)? {
        if algorithm.is_some_and(|a| a != digest.algorithm()) {
            return Err(Error::new(
                ErrorCode::DigestInvalid,
                format!("digest-algorithm does not match the digest {digest}"),
            ));
        }
        // Monolithic: POST ?digest= with the whole blob as the body.
        s.store.blob_put(name, &digest, into_stream(req.into_body())).await?;
        return Ok(blob_created(name, &digest));
    }
    let id = s.store.upload_create(name, algorithm.unwrap_or(Algorithm::Sha256)).await?;
    let mut r = progress(StatusCode::ACCEPTED, name, &id, 0);
    if let Some(n) = s.store.chunk_min_length() {
        r.headers_mut().insert(OCI_CHUNK_MIN_LENGTH, HeaderValue::from(n));
    }
    Ok(r)
}

/// Writes the request body into the session at the offset its `Content-Range` names (or at
/// the end, for a streamed PATCH); checks the length the range announced.
async fn append<B>(s: &Shared, name: &Name, id: &str, req: Request<B>) -> HResult<u64>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let range = content_range(req.headers())?;
    let length = content_length(req.headers());
    if let (Some((a, b)), Some(len)) = (range, length) {
        // `content_range` guarantees a <= b; the span of a range ending at u64::MAX does not fit.
        if b.checked_sub(a).and_then(|d| d.checked_add(1)) != Some(len) {
            return Err(Error::new(
                ErrorCode::SizeInvalid,
                format!("Content-Range {a}-{b} does not match Content-Length {len}"),
            ));
        }
    }
    let offset = match range {
        Some((a, _)) => a,
        None => s.store.upload_size(name, id).await?,
    };
    let stream = into_stream(req.into_body());
    let size = s.store.upload_write(name, id, offset, stream).await.map_err(|e| match e {
        StoreError::UploadOffset { .. } => {
            Error::from(e).with_header(header::LOCATION, session_location(name, id))
        }
        e => e.into(),
    })?;
    if let Some((_, b)) = range {
        if b.checked_add(1) != Some(size) {
            return Err(Error::new(
                ErrorCode::SizeInvalid,
                format!("the body ended at byte {size}, Content-Range announced {}", b.saturating_add(1)),
            )
            .with_range(size)
            .with_header(header::LOCATION, session_location(name, id)));
        }
    }
    Ok(size)
}

async fn patch<B>(s: &Shared, name: &Name, id: &str, req: Request<B>) -> HResult
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let size = append(s, name, id, req).await?;
    Ok(progress(StatusCode::ACCEPTED, name, id, size))
}

async fn finish<B>(s: &Shared, name: &Name, id: &str, req: Request<B>) -> HResult
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let digest = digest_param(req.uri())?
        .ok_or_else(|| Error::new(ErrorCode::DigestInvalid, "the digest query parameter is required"))?;
    if !is_empty(req.body(), req.headers()) {
        append(s, name, id, req).await?;
    }
    s.store.upload_commit(name, id, &digest).await?;
    Ok(blob_created(name, &digest))
}

async fn put_manifest<B>(s: &Shared, name: &Name, reference: &Reference, req: Request<B>) -> HResult
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let tags = tags_to_set(reference, req.uri())?;
    let too_big = || {
        Error::new(ErrorCode::ManifestInvalid, format!("manifest exceeds the {} byte limit", s.max_manifest))
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if content_length(req.headers()).is_some_and(|n| n > s.max_manifest as u64) {
        return Err(too_big());
    }
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = http_body_util::Limited::new(req.into_body(), s.max_manifest)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_big()
            } else {
                Error::new(ErrorCode::ManifestInvalid, format!("reading the manifest failed: {e}"))
            }
        })?
        .to_bytes();
    let parsed = manifest::parse(&bytes, content_type.as_deref())?;
    let digest = match reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if &actual != d {
                return Err(Error::new(
                    ErrorCode::DigestInvalid,
                    "the manifest does not match the digest in the path",
                )
                .with_detail(serde_json::json!({ "expected": d.as_str(), "actual": actual.as_str() })));
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&bytes),
    };
    let blob_checks = parsed.blobs.iter().map(|b| async move {
        match s.store.blob_size(name, &b.digest).await {
            // Clients size buffers and progress from descriptors: a size that is not the
            // blob's would mislead every one of them.
            Ok(size) if b.size.is_some_and(|claimed| claimed != size) => Err(Error::new(
                ErrorCode::ManifestInvalid,
                format!(
                    "{} descriptor {} claims {} bytes; the blob has {size}",
                    b.role,
                    b.digest,
                    b.size.unwrap_or(0)
                ),
            )
            .with_detail(serde_json::json!({ "digest": b.digest.as_str(), "size": size }))),
            Ok(_) => Ok(()),
            Err(StoreError::BlobUnknown(_)) if s.accept_missing_blobs => Ok(()),
            Err(StoreError::BlobUnknown(_)) => Err(missing(&b.digest, "blob")),
            Err(e) => Err(e.into()),
        }
    });
    let required = parsed.manifests.iter().filter(|c| s.index_children.requires(c));
    let manifest_checks = required.map(|c| async move {
        match s.store.manifest_exists(name, &c.digest).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(missing(&c.digest, "manifest")),
            Err(e) => Err(Error::from(e)),
        }
    });
    futures_util::future::try_join_all(blob_checks).await?;
    futures_util::future::try_join_all(manifest_checks).await?;
    let referrer = parsed
        .subject
        .clone()
        .map(|subject| (subject, parsed.descriptor(digest.clone(), bytes.len() as u64)));
    s.store
        .manifest_put(
            name,
            ManifestPut {
                digest: digest.clone(),
                media_type: parsed.media_type.clone(),
                bytes,
                tags: tags.clone(),
                referrer,
            },
        )
        .await?;
    let mut r = empty(StatusCode::CREATED);
    let h = r.headers_mut();
    h.insert(header::LOCATION, header_value(&format!("/v2/{name}/manifests/{digest}")));
    h.insert(DOCKER_CONTENT_DIGEST, header_value(digest.as_str()));
    if let Some(subject) = &parsed.subject {
        h.insert(OCI_SUBJECT, header_value(subject.as_str()));
    }
    for t in &tags {
        h.append(OCI_TAG, header_value(t.as_str()));
    }
    Ok(r)
}

/// The most `?tag=` parameters one manifest push may carry (the spec asks for at least 10;
/// more is `414 URI Too Long`).
pub const MAX_TAGS_PER_PUSH: usize = 100;

/// The tags a manifest push sets: the one in the path, and every `?tag=` (spec: end-7b), in
/// order, without repeats. One invalid tag refuses the whole push, before anything is read.
fn tags_to_set(reference: &Reference, uri: &http::Uri) -> HResult<Vec<Tag>> {
    let mut tags: Vec<Tag> = match reference {
        Reference::Tag(t) => vec![t.clone()],
        Reference::Digest(_) => vec![],
    };
    for t in query_params(uri, "tag") {
        let tag: Tag = t.parse().map_err(|e: donjon_core::name::TagError| {
            Error::new(ErrorCode::TagInvalid, format!("tag parameter: {e}"))
                .with_detail(serde_json::json!({ "tag": t.chars().take(200).collect::<String>() }))
        })?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
        if tags.len() > MAX_TAGS_PER_PUSH {
            return Err(Error::new(
                ErrorCode::TagInvalid,
                format!("at most {MAX_TAGS_PER_PUSH} tags can be set by one push"),
            )
            .with_status(StatusCode::URI_TOO_LONG));
        }
    }
    Ok(tags)
}

fn missing(d: &Digest, what: &str) -> Error {
    Error::new(
        ErrorCode::ManifestBlobUnknown,
        format!("the manifest references a {what} unknown to this repository: {d}"),
    )
    .with_detail(serde_json::json!({ "digest": d.as_str() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UploadLayer;
    use donjon_core::memory::MemoryStore;
    use donjon_core::RouteLayer;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::{ServiceBuilder, ServiceExt};

    fn stack(
        passed: Arc<AtomicUsize>,
    ) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
        let store = Arc::new(MemoryStore::default());
        ServiceBuilder::new().layer(RouteLayer::new()).layer(UploadLayer::new(store)).service(
            tower::service_fn(move |_req: Request<Body>| {
                passed.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(Body::from("inner"))) }
            }),
        )
    }

    fn req(method: &str, uri: &str, body: &'static [u8]) -> Request<Body> {
        Request::builder().method(method).uri(uri).body(Body::from(Bytes::from_static(body))).unwrap()
    }

    #[tokio::test]
    async fn passes_reads_on_and_handles_writes() {
        let passed = Arc::new(AtomicUsize::new(0));
        let svc = stack(passed.clone());
        for (m, u) in [
            ("GET", "/v2/a/manifests/x"),
            ("GET", "/v2/"),
            ("HEAD", "/v2/a/blobs/uploads/"),
            ("GET", "/other"),
        ] {
            svc.clone().oneshot(req(m, u, b"")).await.unwrap();
        }
        assert_eq!(passed.load(Ordering::SeqCst), 4);
        let r = svc.clone().oneshot(req("POST", "/v2/a/blobs/uploads/", b"")).await.unwrap();
        assert_eq!(r.status(), 202);
        let r = svc.oneshot(req("PUT", "/v2/a/manifests/x", b"{}")).await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(passed.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn upload_then_manifest_in_process() {
        let svc = stack(Arc::new(AtomicUsize::new(0)));
        let d = Digest::sha256_of(b"{}");
        let r = svc
            .clone()
            .oneshot(req("POST", &format!("/v2/a/blobs/uploads/?digest={d}"), b"{}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{d}","size":2}},"layers":[]}}"#,
            manifest::OCI_MANIFEST
        );
        let m: &'static [u8] = Box::leak(m.into_bytes().into_boxed_slice());
        let r = svc.oneshot(req("PUT", "/v2/a/manifests/v1", m)).await.unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()[DOCKER_CONTENT_DIGEST].to_str().unwrap(), Digest::sha256_of(m).as_str());
    }

    #[test]
    fn content_range_forms() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_RANGE, HeaderValue::from_str(v).unwrap());
            content_range(&m)
        };
        assert_eq!(h("0-21").unwrap(), Some((0, 21)));
        assert_eq!(h("bytes 22-41/42").unwrap(), Some((22, 41)));
        assert_eq!(h("bytes=5-5").unwrap(), Some((5, 5)));
        assert!(h("9-1").is_err());
        assert!(h("0-18446744073709551615").is_err(), "its length would wrap");
        assert!(h("0-18446744073709551616").is_err());
        assert!(h("x-y").is_err());
        assert_eq!(content_range(&HeaderMap::new()).unwrap(), None);
    }
}
