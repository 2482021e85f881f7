//! The web page's parsers and pages, from bytes a caller or a pusher controls: the page path
//! (`/ui/r/<name>[:tag|@digest]`) and its query, the cookie, the login form, and manifests,
//! configs and referrer lists as the registry below returns them (a manifest's annotations are
//! whatever its pusher wrote). None may panic, and no page may hold markup of the input's: the
//! only `<script` is the page's own, there is never an `<img`, and a copy button's command holds
//! nothing but names, tags and digests.
#![no_main]

use std::convert::Infallible;

use donjon_browse::BrowseLayer;
use donjon_core::Body;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt};

fuzz_target!(|data: &str| {
    let (head, doc) = data.split_once('\n').unwrap_or((data, "{}"));
    let doc = doc.to_string();
    let registry = tower::service_fn(move |req: http::Request<Body>| {
        let doc = doc.clone();
        async move {
            let path = req.uri().path();
            let body = if path.ends_with("/tags/list") {
                format!(
                    r#"{{"tags":{}}}"#,
                    serde_json::to_string(&doc.lines().collect::<Vec<_>>()).unwrap_or_default()
                )
            } else if path == "/v2/_catalog" {
                format!(
                    r#"{{"repositories":{}}}"#,
                    serde_json::to_string(&doc.lines().collect::<Vec<_>>()).unwrap_or_default()
                )
            } else {
                doc
            };
            let mut r = http::Response::new(Body::from(body));
            r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
            Ok::<_, Infallible>(r)
        }
    });
    let ui = BrowseLayer::new().token_endpoint("/v2/token").pull_through(true).layer(registry);
    let (method, target) = match head.strip_prefix("POST ") {
        Some(rest) => (http::Method::POST, rest),
        None => (http::Method::GET, head),
    };
    let Ok(uri) = format!("/ui/{target}").parse::<http::Uri>() else { return };
    let mut req = http::Request::new(Body::from(target.to_string()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    if let Ok(v) = http::HeaderValue::try_from(format!("donjon_ui={target}")) {
        req.headers_mut().insert(http::header::COOKIE, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async move {
        let resp = ui.oneshot(req).await.expect("infallible");
        let html = resp.into_body().collect().await.expect("a body").to_bytes();
        let html = String::from_utf8_lossy(&html).to_ascii_lowercase();
        assert!(html.matches("<script").count() <= 1, "markup of the input in the page:\n{html}");
        assert!(!html.contains("<img"), "markup of the input in the page:\n{html}");
        // What a copy button copies is a command made of checked names: nothing a shell would
        // take for more than words.
        // (A copy button's attribute: an escaped name cannot spell its `"`s.)
        for copied in
            html.split("class=\"copy\" data-copy=\"").skip(1).filter_map(|rest| rest.split_once('"'))
        {
            let ok = copied.0.bytes().all(|b| b.is_ascii_alphanumeric() || b" ._:/@+=-".contains(&b));
            assert!(ok, "a copied command holds more than names: {:?}", copied.0);
        }
    });
});
