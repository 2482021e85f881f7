use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use donjon_core::claim::{Claim, Claimed, Claiming};
use donjon_core::manifest;
use donjon_core::store::{ManifestPut, RangeSpec};
use donjon_core::{mirror, Body, Digest, Error, ErrorCode, Name, Reference, Route, StoreError};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;

use crate::client::UpstreamError;
use crate::layer::{Shared, CHECKED_MAX};
use crate::upstream::{Refused, Upstream};
use crate::ProxyCacheLayer;

/// The largest manifest fetched from an upstream.
const MANIFEST_MAX: usize = 4 * 1024 * 1024;
/// The largest tag list taken from an upstream (Docker Hub's largest repositories list a few
/// thousand tags: well under 1 MiB).
const TAGS_MAX: usize = 8 * 1024 * 1024;

/// The service of [`ProxyCacheLayer`]: reads of cached names are made fresh (or answered
/// from the upstream) before the layers below answer them.
pub type ProxyCache<S> = Claiming<ProxyCacheLayer, S>;

fn accept_manifests() -> HeaderValue {
    HeaderValue::from_static(concat!(
        "application/vnd.oci.image.index.v1+json, ",
        "application/vnd.oci.image.manifest.v1+json, ",
        "application/vnd.docker.distribution.manifest.list.v2+json, ",
        "application/vnd.docker.distribution.manifest.v2+json"
    ))
}

/// The client's answer for an upstream failure with nothing cached to fall back on.
fn upstream_error(e: &UpstreamError, what: ErrorCode) -> Response<Body> {
    let err = match e {
        UpstreamError::Status(StatusCode::NOT_FOUND) => Error::new(what, "not found upstream"),
        UpstreamError::Status(StatusCode::UNAUTHORIZED) => {
            Error::new(ErrorCode::Unauthorized, "the upstream registry refused our credentials")
        }
        UpstreamError::Status(StatusCode::FORBIDDEN) => {
            Error::new(ErrorCode::Denied, "the upstream registry denied access")
        }
        UpstreamError::Status(StatusCode::TOO_MANY_REQUESTS) => {
            Error::new(ErrorCode::TooManyRequests, "the upstream registry is rate limiting us")
        }
        UpstreamError::Refused(Refused::Offline) => Error::new(what, e.to_string()),
        UpstreamError::Refused(r) => Error::new(ErrorCode::Denied, r.to_string()),
        UpstreamError::NotAManifest(_) => {
            Error::new(ErrorCode::ManifestInvalid, e.to_string()).with_status(StatusCode::BAD_GATEWAY)
        }
        UpstreamError::TooLarge(_) => {
            Error::new(ErrorCode::SizeInvalid, e.to_string()).with_status(StatusCode::BAD_GATEWAY)
        }
        other => Error::new(ErrorCode::Unavailable, other.to_string()).with_status(StatusCode::BAD_GATEWAY),
    };
    err.into_response()
}

impl Shared {
    fn upstream(&self, name: &Name) -> Result<Upstream, UpstreamError> {
        let (host, repo) = mirror::split(name).ok_or(Refused::BadHost(name.to_string()))?;
        self.upstreams.resolve(host, repo).map_err(|r| {
            if matches!(r, Refused::NotPublic(_)) {
                crate::upstream::warn_once(&r);
            }
            r.into()
        })
    }

    /// Makes the store hold the manifest `reference` of `name` as fresh as the rules want; an
    /// error is the response to send instead.
    async fn manifest(&self, name: &Name, reference: &Reference) -> Result<(), Response<Body>> {
        let up = self.upstream(name);
        match reference {
            Reference::Digest(d) => {
                if matches!(self.store.manifest_exists(name, d).await, Ok(true)) {
                    donjon_core::metrics::metrics().record_proxy("manifest_cached");
                    return Ok(());
                }
                let up = up.map_err(|e| upstream_error(&e, ErrorCode::ManifestUnknown))?;
                self.fetch_manifest(&up, name, d.as_str(), Some(d), None)
                    .await
                    .map(drop)
                    .map_err(|e| upstream_error(&e, ErrorCode::ManifestUnknown))
            }
            Reference::Tag(tag) => {
                let cached = match self.store.manifest_get(name, reference).await {
                    Ok(m) => Some(m.digest),
                    Err(_) => None,
                };
                let key = (name.clone(), tag.as_str().to_string());
                let fresh = self
                    .checked
                    .lock()
                    .ok()
                    .and_then(|c| c.get(&key).copied())
                    .is_some_and(|t| t.elapsed() < self.check_interval);
                if cached.is_some() && (fresh || self.upstreams.offline()) {
                    donjon_core::metrics::metrics().record_proxy("manifest_cached");
                    return Ok(());
                }
                let checked = async {
                    let up = up?;
                    let head = self
                        .client
                        .send(&up, Method::HEAD, &format!("manifests/{tag}"), Some(&accept_manifests()))
                        .await?;
                    if !head.status().is_success() {
                        return Err(UpstreamError::Status(head.status()));
                    }
                    let upstream_digest: Option<Digest> = head
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    if upstream_digest.is_some() && upstream_digest == cached {
                        donjon_core::metrics::metrics().record_proxy("manifest_cached");
                        return Ok(());
                    }
                    let path = match &upstream_digest {
                        Some(d) => d.to_string(),
                        None => tag.to_string(),
                    };
                    self.fetch_manifest(&up, name, &path, upstream_digest.as_ref(), Some(tag.clone()))
                        .await
                        .map(drop)
                }
                .await;
                match checked {
                    Ok(()) => {
                        if let Ok(mut c) = self.checked.lock() {
                            if c.len() >= CHECKED_MAX {
                                c.clear();
                            }
                            c.insert(key, Instant::now());
                        }
                        Ok(())
                    }
                    // Upstream says what it says about the tag: gone, or not for us.
                    Err(
                        e @ UpstreamError::Status(
                            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN,
                        ),
                    ) => Err(upstream_error(&e, ErrorCode::ManifestUnknown)),
                    Err(e) if cached.is_some() => {
                        donjon_core::metrics::metrics().record_proxy("stale");
                        tracing::warn!(%name, %tag, error = %e, "proxy: upstream check failed; serving the cached copy");
                        Ok(())
                    }
                    Err(e) => Err(upstream_error(&e, ErrorCode::ManifestUnknown)),
                }
            }
        }
    }

    /// `GET /v2/<shown>/tags/list` of the cached repository `name`: the upstream's list, as
    /// Distribution's proxy answers it, or what is cached when the upstream cannot be asked.
    /// The page is the client's: its `n` and a valid `last` go upstream too, and a page the
    /// upstream says continues gets a `Link` of this registry's.
    async fn tags(&self, shown: &Name, name: &Name, uri: &http::Uri) -> Response<Body> {
        let (n, last) = match donjon_core::response::page(uri) {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
        let mut path = String::from("tags/list");
        let mut sep = '?';
        if let Some(n) = n {
            path.push_str(&format!("{sep}n={n}"));
            sep = '&';
        }
        if let Some(l) = last.as_deref().filter(|l| l.parse::<donjon_core::Tag>().is_ok()) {
            path.push_str(&format!("{sep}last={l}"));
        }
        let listed = async {
            let up = self.upstream(name)?;
            let json = HeaderValue::from_static("application/json");
            let resp = self.client.send(&up, Method::GET, &path, Some(&json)).await?;
            if !resp.status().is_success() {
                return Err(UpstreamError::Status(resp.status()));
            }
            let continues = resp.headers().contains_key(header::LINK);
            let body = self.small_body(resp, TAGS_MAX, "tag list").await?;
            #[derive(serde::Deserialize)]
            struct List {
                tags: Option<Vec<String>>,
            }
            let list: List = serde_json::from_slice(&body).map_err(|e| {
                UpstreamError::Unreachable(format!("the upstream's tag list is not one: {e}"))
            })?;
            Ok((list.tags.unwrap_or_default(), continues))
        }
        .await;
        let (tags, continues) = match listed {
            Ok(l) => {
                donjon_core::metrics::metrics().record_proxy("tags_fetch");
                l
            }
            Err(e) => match self.store.tags(name).await {
                Ok(t) if !t.is_empty() => {
                    donjon_core::metrics::metrics().record_proxy("stale");
                    tracing::warn!(%name, error = %e, "proxy: upstream tag list failed; listing the cached tags");
                    (t, false)
                }
                _ => return upstream_error(&e, ErrorCode::NameUnknown),
            },
        };
        let mut tags: Vec<String> =
            tags.into_iter().filter(|t| t.parse::<donjon_core::Tag>().is_ok()).collect();
        tags.sort_unstable();
        tags.dedup();
        let page_last = tags.last().cloned();
        let mut r = match donjon_core::response::tags_list(shown, tags, uri) {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        // The upstream's own page ended at `n` and it says more follow.
        if let (true, Some(n), Some(l)) = (continues, n, page_last) {
            if !r.headers().contains_key(header::LINK) {
                let link = donjon_core::response::next_link(&format!("/v2/{shown}/tags/list"), n, &l);
                r.headers_mut().insert(header::LINK, link);
            }
        }
        r
    }

    /// The whole body of a small upstream answer (a manifest, a tag list): at most `max`
    /// bytes, within the read timeout.
    async fn small_body(
        &self,
        resp: Response<hyper::body::Incoming>,
        max: usize,
        what: &str,
    ) -> Result<Bytes, UpstreamError> {
        Ok(tokio::time::timeout(
            self.client.read_timeout(),
            http_body_util::Limited::new(resp.into_body(), max).collect(),
        )
        .await
        .map_err(|_| UpstreamError::Timeout)?
        .map_err(|e| UpstreamError::Unreachable(format!("{what} body: {e}")))?
        .to_bytes())
    }

    /// GETs a manifest from upstream, checks it against `expected`, and stores it (under
    /// `tag`, when given).
    async fn fetch_manifest(
        &self,
        up: &Upstream,
        name: &Name,
        path: &str,
        expected: Option<&Digest>,
        tag: Option<donjon_core::Tag>,
    ) -> Result<Digest, UpstreamError> {
        let resp = self
            .client
            .send(up, Method::GET, &format!("manifests/{path}"), Some(&accept_manifests()))
            .await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(resp.status()));
        }
        let content_type =
            resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| v.to_string());
        let header_digest: Option<Digest> = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = self.small_body(resp, MANIFEST_MAX, "manifest").await?;
        let wanted = expected.or(header_digest.as_ref());
        let digest = match wanted {
            Some(d) => {
                let got = Digest::of(d.algorithm(), &body);
                if got != *d {
                    return Err(UpstreamError::Unreachable(format!(
                        "upstream manifest hashes to {got}, not {d}"
                    )));
                }
                got
            }
            None => Digest::sha256_of(&body),
        };
        donjon_core::metrics::metrics().record_proxy("manifest_fetch");
        // Only a manifest is cached as one: an error page, or JSON of another shape, never is.
        let parsed = manifest::parse(&body, content_type.as_deref())
            .map_err(|e| UpstreamError::NotAManifest(e.message().to_string()))?;
        let media_type = parsed.media_type.clone();
        let referrer =
            parsed.subject.clone().map(|s| (s, parsed.descriptor(digest.clone(), body.len() as u64)));
        let put = ManifestPut {
            digest: digest.clone(),
            media_type,
            bytes: body,
            tags: tag.into_iter().collect(),
            referrer,
        };
        self.store
            .manifest_put(name, put)
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("caching the manifest: {e}")))?;
        Ok(digest)
    }

    /// A blob `GET`/`HEAD` that the store could not answer: from a running fill, or upstream;
    /// `None` when the store has it after all (a fill committed it meanwhile).
    async fn blob(
        &self,
        head: bool,
        range: Option<&str>,
        name: &Name,
        digest: &Digest,
    ) -> Option<Response<Body>> {
        let up = match self.upstream(name) {
            Ok(u) => u,
            Err(e) => return Some(upstream_error(&e, ErrorCode::BlobUnknown)),
        };
        // Another repository's fill (or the store's copy) is shared only once this repository's
        // upstream confirms it holds the digest: content is never handed across namespaces on
        // the client's word.
        let running = self.fills.running(digest).is_some();
        if head || running {
            let resp = match self.client.send(&up, Method::HEAD, &format!("blobs/{digest}"), None).await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    return Some(upstream_error(&UpstreamError::Status(r.status()), ErrorCode::BlobUnknown))
                }
                Err(e) => return Some(upstream_error(&e, ErrorCode::BlobUnknown)),
            };
            if head {
                let mut out = Response::new(Body::empty());
                if let Some(len) = resp.headers().get(header::CONTENT_LENGTH) {
                    out.headers_mut().insert(header::CONTENT_LENGTH, len.clone());
                }
                blob_headers(&mut out, digest);
                return Some(out);
            }
        }
        // Asked again now: a fill that was running may have committed (and left) while the
        // upstream was asked, and joining then would fetch the blob a second time.
        if self.fills.running(digest).is_none() && self.store.blob_size(name, digest).await.is_ok() {
            return None;
        }
        let client = self.client.clone();
        let (up2, path) = (up.clone(), format!("blobs/{digest}"));
        let joined = self.fills.join(digest, name, move || {
            Box::pin(async move {
                let resp = client.send(&up2, Method::GET, &path, None).await?;
                if !resp.status().is_success() {
                    return Err(UpstreamError::Status(resp.status()));
                }
                Ok(resp)
            })
        });
        let (fill, file) = match joined {
            Ok(j) => j,
            Err(e) => {
                return Some(Error::new(ErrorCode::Unknown, format!("proxy spool: {e}")).into_response());
            }
        };
        let p = fill.started().await;
        if let Some(Err(e)) = &p.end {
            return Some(upstream_error(e, ErrorCode::BlobUnknown));
        }
        let mut out = match (range, p.size) {
            (Some(r), Some(size)) => {
                let Some(r) = RangeSpec::parse(r).and_then(|s| s.resolve(size)) else {
                    let mut e = Error::new(ErrorCode::RangeInvalid, "range not satisfiable").into_response();
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        e.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    return Some(e);
                };
                let mut out = Response::new(Body::from_stream(fill.reader(file, r.start, Some(r.end))));
                *out.status_mut() = StatusCode::PARTIAL_CONTENT;
                let cr = format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1));
                if let Ok(v) = HeaderValue::from_str(&cr) {
                    out.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                out.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
                out
            }
            (_, size) => {
                let mut out = Response::new(Body::from_stream(fill.reader(file, 0, size)));
                if let Some(s) = size {
                    out.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(s));
                }
                out
            }
        };
        blob_headers(&mut out, digest);
        Some(out)
    }
}

fn blob_headers(out: &mut Response<Body>, digest: &Digest) {
    let h = out.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(digest.as_str()) {
        h.insert("docker-content-digest", v);
    }
}

fn unsupported() -> Response<Body> {
    Error::new(
        ErrorCode::Unsupported,
        "f/<host>/… is a pull-through cache: push to and delete from its upstream registry",
    )
    .into_response()
}

/// Decides a read of a cached name: the store holds it fresh (or is made to), then the layers
/// below answer (`Ok`); or a running fill or the upstream answers here (`Err`).
async fn read_cached<B>(
    shared: Arc<Shared>,
    req: Request<B>,
    route: Route,
    name: Name,
) -> Result<Request<B>, Response<Body>> {
    match route {
        Route::Manifest { reference, .. } => {
            shared.manifest(&name, &reference).await?;
            shared.pulled(&name, &reference);
            Ok(req)
        }
        Route::Blob { digest, .. } => match shared.store.blob_size(&name, &digest).await {
            Ok(_) => {
                donjon_core::metrics::metrics().record_proxy("blob_cached");
                Ok(req)
            }
            Err(StoreError::BlobUnknown(_)) => {
                donjon_core::metrics::metrics().record_proxy("blob_fetch");
                let head = req.method() == Method::HEAD;
                let range =
                    req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
                match shared.blob(head, range.as_deref(), &name, &digest).await {
                    Some(resp) => Err(resp),
                    None => Ok(req),
                }
            }
            Err(e) => Err(Error::from(e).into_response()),
        },
        Route::Tags { .. } => {
            let shown = req.extensions().get::<Shown>().map_or(name.clone(), |s| s.0.clone());
            Err(shared.tags(&shown, &name, req.uri()).await)
        }
        // What is cached: referrers.
        _ => Ok(req),
    }
}

/// The repository name a client asked for, when the default upstream's cached name answers
/// it: the name its tag list is shown under.
#[derive(Clone, Debug)]
struct Shown(Name);

impl Shared {
    /// Whether a local read should go to the default upstream instead: when one is set and
    /// the store has no such manifest or blob in the repository, or no tag to list.
    async fn to_default(&self, route: &Route) -> Option<Name> {
        let host = self.default.as_deref()?;
        let missing = match route {
            Route::Manifest { name, reference } => self.store.manifest_get(name, reference).await.is_err(),
            Route::Blob { name, digest } => self.store.blob_size(name, digest).await.is_err(),
            Route::Tags { name } => self.store.tags(name).await.map_or(true, |t| t.is_empty()),
            _ => false,
        };
        missing.then(|| route.name().and_then(|n| mirror::cached_name(host, n.as_str()).ok())).flatten()
    }
}

impl<S, B> Claim<S, B> for ProxyCacheLayer
where
    B: Send + 'static,
{
    fn claim(&self, mut req: Request<B>, _: &S) -> Claimed<B> {
        let Some(route) = req.extensions().get::<Route>().cloned() else {
            return Claimed::Pass(req);
        };
        let read = req.method() == Method::GET || req.method() == Method::HEAD;
        let proxied = (read && matches!(route, Route::Manifest { .. } | Route::Blob { .. }))
            || (req.method() == Method::GET && matches!(route, Route::Tags { .. }));
        let cached = route.name().filter(|n| mirror::is_cached(n)).cloned();
        match &cached {
            // What is cached: referrers.
            Some(_) if read && matches!(route, Route::Referrers { .. }) => return Claimed::Pass(req),
            Some(_) if !proxied => return Claimed::Respond(unsupported()),
            // docker's `--registry-mirror` and podman's mirrors send no `ns`: what is not
            // here comes from the default upstream. Without one, local reads pass straight on.
            None if !(proxied && self.shared.default.is_some()) => return Claimed::Pass(req),
            _ => {}
        }
        let shared = self.shared.clone();
        match cached {
            Some(name) => Claimed::later(read_cached(shared, req, route, name)),
            None => Claimed::later(async move {
                let Some(name) = shared.to_default(&route).await else { return Ok(req) };
                if let Some(shown) = route.name() {
                    req.extensions_mut().insert(Shown(shown.clone()));
                }
                let route = route.with_name(name.clone());
                req.extensions_mut().insert(route.clone());
                read_cached(shared, req, route, name).await
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_map_to_registry_errors() {
        let code = |e: UpstreamError| upstream_error(&e, ErrorCode::ManifestUnknown).status().as_u16();
        assert_eq!(code(UpstreamError::Status(StatusCode::NOT_FOUND)), 404);
        assert_eq!(code(UpstreamError::Status(StatusCode::UNAUTHORIZED)), 401);
        assert_eq!(code(UpstreamError::Status(StatusCode::FORBIDDEN)), 403);
        assert_eq!(code(UpstreamError::Status(StatusCode::INTERNAL_SERVER_ERROR)), 502);
        assert_eq!(code(UpstreamError::Timeout), 502);
        assert_eq!(code(UpstreamError::Refused(Refused::NotPublic("10.0.0.1".into()))), 403);
        assert_eq!(code(UpstreamError::Refused(Refused::Offline)), 404);
    }
}
