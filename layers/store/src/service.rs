use bytes::Bytes;
use donjon_core::claim::{Claim, Claimed, Claiming};
use donjon_core::response::{
    header_value, next_link, page, query_param, DOCKER_CONTENT_DIGEST, OCI_FILTERS_APPLIED,
};
use donjon_core::store::RangeSpec;
use donjon_core::{manifest, Body, Digest, Error, ErrorCode, Name, Reference, Route};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::layer::Shared;
use crate::ContentStoreLayer;

/// The service of [`ContentStoreLayer`]: it answers every routed request.
pub type ContentStore<S> = Claiming<ContentStoreLayer, S>;

impl<S, B> Claim<S, B> for ContentStoreLayer {
    fn claim(&self, req: Request<B>, _: &S) -> Claimed<B> {
        let Some(route) = req.extensions().get::<Route>().cloned() else {
            return Claimed::Pass(req);
        };
        let (parts, _body) = req.into_parts();
        let shared = self.shared.clone();
        Claimed::answer(
            async move { dispatch(&shared, route, parts).await.unwrap_or_else(Error::into_response) },
        )
    }
}

use donjon_core::response::{empty, json, with_body, HandlerResult as HResult};

async fn dispatch(s: &Shared, route: Route, req: http::request::Parts) -> HResult {
    let m = &req.method;
    let read = m == Method::GET || m == Method::HEAD;
    let head = m == Method::HEAD;
    match route {
        Route::Base if read => Ok(json(StatusCode::OK, Bytes::from_static(b"{}"), head)),
        Route::Catalog if m == Method::GET => catalog(s, &req).await,
        Route::Tags { name } if m == Method::GET => tags(s, &name, &req).await,
        Route::Manifest { name, reference } if read => manifest_get(s, &name, &reference, &req).await,
        Route::Manifest { name, reference } if m == Method::DELETE => {
            deletable(s)?;
            match &reference {
                Reference::Tag(t) => s.store.tag_delete(&name, t).await?,
                Reference::Digest(d) => s.store.manifest_delete(&name, d).await?,
            }
            Ok(accepted())
        }
        Route::Blob { name, digest } if read => blob_get(s, &name, &digest, &req).await,
        Route::Blob { name, digest } if m == Method::DELETE => {
            deletable(s)?;
            s.store.blob_unlink(&name, &digest).await?;
            Ok(accepted())
        }
        Route::Referrers { name, digest } if m == Method::GET => referrers(s, &name, &digest, &req).await,
        Route::Token => Err(Error::new(ErrorCode::NameUnknown, "no token endpoint: authentication is off")
            .with_status(StatusCode::NOT_FOUND)),
        _ => Err(Error::method_not_allowed()),
    }
}

fn deletable(s: &Shared) -> HResult<()> {
    if s.delete_enabled {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::Unsupported,
            "deletes are disabled on this registry: its operator can allow them with \
             storage.delete.enabled: true (or REGISTRY_STORAGE_DELETE_ENABLED=true)",
        ))
    }
}

fn accepted() -> Response<Body> {
    empty(StatusCode::ACCEPTED)
}

/// `n` and `last` of a paginated listing. `n` absent: `None`.
async fn catalog(s: &Shared, req: &http::request::Parts) -> HResult {
    let (n, last) = page(&req.uri)?;
    let n = n.unwrap_or(s.catalog_max).min(s.catalog_max);
    let mut repos = if n == 0 { vec![] } else { s.store.catalog(last.as_deref(), n + 1).await? };
    let more = repos.len() > n;
    repos.truncate(n);
    // Behind an auth layer, the caller sees only what it may pull (a page may so be short;
    // the `Link` still follows the store's order).
    let page_end = repos.last().cloned();
    if let Some(p) = req.extensions.get::<donjon_core::Principal>() {
        repos.retain(|r| r.parse::<Name>().is_ok_and(|n| p.may(&n, donjon_core::route::Action::Pull)));
    }
    let body = serde_json::json!({ "repositories": repos }).to_string();
    let mut r = json(StatusCode::OK, body.into(), false);
    if more {
        if let Some(l) = page_end {
            r.headers_mut().insert(header::LINK, next_link("/v2/_catalog", n, &l));
        }
    }
    Ok(r)
}

async fn tags(s: &Shared, name: &Name, req: &http::request::Parts) -> HResult {
    donjon_core::response::tags_list(name, s.store.tags(name).await?, &req.uri)
}

fn etag(d: &Digest) -> HeaderValue {
    header_value(&format!("\"{d}\""))
}

fn not_modified(req: &http::request::Parts, d: &Digest) -> bool {
    req.headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().trim_start_matches("W/").trim_matches('"') == d.as_str() || t.trim() == "*")
    })
}

async fn manifest_get(s: &Shared, name: &Name, reference: &Reference, req: &http::request::Parts) -> HResult {
    let m = s.store.manifest_get(name, reference).await?;
    let mut r = if not_modified(req, &m.digest) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        with_body(StatusCode::OK, &m.media_type, m.bytes, req.method == Method::HEAD)
    };
    let h = r.headers_mut();
    h.insert(DOCKER_CONTENT_DIGEST, header_value(m.digest.as_str()));
    h.insert(header::ETAG, etag(&m.digest));
    Ok(r)
}

async fn blob_get(s: &Shared, name: &Name, digest: &Digest, req: &http::request::Parts) -> HResult {
    let mut r = if req.method == Method::HEAD {
        let size = s.store.blob_size(name, digest).await?;
        let mut r = Response::new(Body::empty());
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        r
    } else if not_modified(req, digest) {
        s.store.blob_size(name, digest).await?;
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if let Some(url) = {
        s.store.blob_size(name, digest).await?;
        s.store.blob_redirect(name, digest).await?
    } {
        // Straight from object storage: the client sends its Range there.
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        r.headers_mut().insert(header::LOCATION, header_value(&url));
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        r
    } else {
        // An unparsable or multi-part Range is ignored: the whole blob is sent (RFC 9110).
        let spec = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(RangeSpec::parse);
        let read = s.store.blob_read(name, digest, spec.unwrap_or(RangeSpec::Full)).await?;
        let len = read.range.end - read.range.start;
        let mut r = Response::new(Body::from_stream(read.body));
        let h = r.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if spec.is_some() {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let cr = format!("bytes {}-{}/{}", read.range.start, read.range.end.saturating_sub(1), read.size);
            r.headers_mut().insert(header::CONTENT_RANGE, header_value(&cr));
        }
        r
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(DOCKER_CONTENT_DIGEST, header_value(digest.as_str()));
    h.insert(header::ETAG, etag(digest));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=31536000"));
    Ok(r)
}

async fn referrers(s: &Shared, name: &Name, subject: &Digest, req: &http::request::Parts) -> HResult {
    let filter = query_param(&req.uri, "artifactType").map(|f| f.into_owned()).filter(|f| !f.is_empty());
    let mut list = s.store.referrers(name, subject).await?;
    if let Some(f) = &filter {
        list.retain(|d| d.artifact_type.as_deref() == Some(f.as_str()));
    }
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": list,
    })
    .to_string();
    let mut r = with_body(StatusCode::OK, manifest::OCI_INDEX, body.into(), false);
    if filter.is_some() {
        r.headers_mut().insert(OCI_FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    Ok(r)
}
