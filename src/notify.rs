//! Event notifications, as Distribution sends them (`notifications.endpoints`): each push,
//! pull, mount and delete becomes an event in Distribution's envelope
//! (`application/vnd.docker.distribution.events.v1+json`, `{"events": [...]}`), POSTed to
//! every endpoint that does not ignore it.
//!
//! Events leave the request path at once: the [`EventsLayer`] middleware publishes each on a
//! bounded channel and goes on; every endpoint reads it at its own pace, in batches, with
//! its own timeout, and retries a failed batch after `backoff` (doubling, at most 30 s) until
//! it is taken. An endpoint that falls more than [`QUEUE`] events behind loses the oldest ones,
//! counted in `donjon_notifications_dropped_total{endpoint}`. A request never waits on a
//! listener.
//!
//! ```
//! use donjon::notify::NotificationsConfig;
//!
//! let c: NotificationsConfig = serde_yaml::from_str(r#"
//! endpoints:
//!   - name: listener
//!     url: https://listener.example/events
//!     headers: {Authorization: [Bearer secret]}
//!     timeout: 1s
//!     backoff: 1s
//!     ignore: {actions: [pull]}
//! "#).unwrap();
//! assert_eq!(c.endpoints[0].name, "listener");
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tower_service::Service;

use donjon_core::config::{duration, ConfigError};
use donjon_core::{Body, ClientConn, Reference, Route};

/// The envelope's media type.
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// How many events an endpoint may fall behind before the oldest are dropped.
pub const QUEUE: usize = 4096;
/// The most events one POST carries.
const BATCH: usize = 64;

/// Distribution's `notifications` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationsConfig {
    /// Where events go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointConfig>,
    /// Read (Distribution's `events.includereferences`); events carry no references.
    #[serde(skip_serializing)]
    pub events: Option<donjon_core::config::Accepted>,
}

/// One endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct EndpointConfig {
    /// Its name, in logs and metrics.
    pub name: String,
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// Headers sent with every POST (`Authorization: [Bearer …]`).
    #[serde(skip_serializing)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// How long a POST may take (default 1 s).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Failures in a row before the endpoint is said to be failing (default 10).
    pub threshold: u32,
    /// The first wait after a failure (default 1 s); it doubles up to 30 s.
    #[serde(with = "duration")]
    pub backoff: Duration,
    /// Left out entirely.
    pub disabled: bool,
    /// Events whose target has one of these media types are not sent (Distribution's older
    /// key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignoredmediatypes: Vec<String>,
    /// Events not sent: by target media type, by action (`push`, `pull`, `mount`, `delete`).
    pub ignore: Ignore,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(1),
            threshold: 10,
            backoff: Duration::from_secs(1),
            disabled: false,
            ignoredmediatypes: vec![],
            ignore: Ignore::default(),
        }
    }
}

/// `ignore`: what an endpoint is not sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Ignore {
    /// Target media types.
    pub mediatypes: Vec<String>,
    /// Actions.
    pub actions: Vec<String>,
}

impl NotificationsConfig {
    /// Checks every endpoint: a name, an http(s) URL, valid headers, a timeout.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = |k: &str| format!("notifications.endpoints[{i}].{k}");
            if e.name.is_empty() {
                return Err(ConfigError::new(key("name"), "is required"));
            }
            let ok = e
                .url
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if !ok {
                return Err(ConfigError::new(
                    key("url"),
                    format!("{:?} is not an http:// or https:// URL", e.url),
                ));
            }
            for (k, vs) in &e.headers {
                if HeaderName::try_from(k.as_str()).is_err()
                    || vs.iter().any(|v| HeaderValue::try_from(v.as_str()).is_err())
                {
                    return Err(ConfigError::new(key("headers"), format!("{k:?} is not a valid header")));
                }
            }
            if e.timeout.is_zero() {
                return Err(ConfigError::new(key("timeout"), "must be above zero"));
            }
            for a in &e.ignore.actions {
                if !["push", "pull", "mount", "delete"].contains(&a.as_str()) {
                    return Err(ConfigError::new(
                        key("ignore.actions"),
                        format!("{a:?} is not push, pull, mount or delete"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether no endpoint is configured.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Whether any endpoint is to be sent events.
    pub fn enabled(&self) -> bool {
        self.endpoints.iter().any(|e| !e.disabled)
    }
}

/// One event, as Distribution's envelope carries it.
#[derive(Debug, Clone)]
pub struct Event {
    action: &'static str,
    media_type: Option<String>,
    value: Value,
}

/// Publishes events; each endpoint's sender reads them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    tx: broadcast::Sender<Arc<Event>>,
    host: Option<String>,
    instance: String,
}

impl Notifier {
    /// A notifier for `config`'s endpoints, and the futures that send to them (spawn each);
    /// `host` is the registry's public name, for the events' URLs.
    pub fn new(
        config: &NotificationsConfig,
        host: Option<String>,
    ) -> (Self, Vec<Pin<Box<dyn Future<Output = ()> + Send>>>) {
        Self::with_queue(config, host, QUEUE)
    }

    /// [`Notifier::new`], each endpoint falling at most `queue` events behind.
    pub fn with_queue(
        config: &NotificationsConfig,
        host: Option<String>,
        queue: usize,
    ) -> (Self, Vec<Pin<Box<dyn Future<Output = ()> + Send>>>) {
        let (tx, _) = broadcast::channel(queue.max(1));
        let mut senders: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = vec![];
        for e in config.endpoints.iter().filter(|e| !e.disabled) {
            senders.push(Box::pin(send_loop(e.clone(), tx.subscribe())));
        }
        let instance = uuid::Uuid::new_v4().to_string();
        (Self { tx, host, instance }, senders)
    }

    fn publish(&self, e: Event) {
        // no endpoint listening is no error
        let _ = self.tx.send(Arc::new(e));
    }
}

/// What the events middleware keeps of a request until its answer.
#[derive(Debug)]
struct Seen {
    method: Method,
    route: Option<Route>,
    query: Option<String>,
    content_type: Option<String>,
    content_length: Option<u64>,
    addr: Option<String>,
    host: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    actor: donjon_core::ActorSlot,
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

impl Notifier {
    /// The event a request and its answer make, if any.
    fn event(&self, seen: &Seen, status: StatusCode, headers: &HeaderMap) -> Option<Event> {
        let route = seen.route.as_ref()?;
        let name = route.name()?;
        let digest = header_str(headers, HeaderName::from_static("docker-content-digest"));
        let (action, media_type, size, tag) = match (route, &seen.method, status.as_u16()) {
            (Route::Manifest { reference, .. }, &Method::PUT, 201) => {
                let tag = match reference {
                    Reference::Tag(t) => Some(t.to_string()),
                    Reference::Digest(_) => None,
                };
                ("push", seen.content_type.clone(), seen.content_length, tag)
            }
            (Route::Manifest { reference, .. }, &Method::GET, 200) => {
                let tag = match reference {
                    Reference::Tag(t) => Some(t.to_string()),
                    Reference::Digest(_) => None,
                };
                let size = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
                ("pull", header_str(headers, header::CONTENT_TYPE), size, tag)
            }
            (Route::Blob { .. }, &Method::GET, 200) => {
                let size = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
                ("pull", Some("application/octet-stream".into()), size, None)
            }
            (Route::UploadStart { .. }, &Method::POST, 201) => {
                let mount = seen.query.as_deref().is_some_and(|q| q.contains("mount="));
                let action = if mount { "mount" } else { "push" };
                let size = if mount { None } else { seen.content_length };
                (action, Some("application/octet-stream".into()), size, None)
            }
            (Route::Upload { .. }, &Method::PUT, 201) => {
                ("push", Some("application/octet-stream".into()), None, None)
            }
            (Route::Manifest { reference, .. }, &Method::DELETE, 202) => {
                let tag = match reference {
                    Reference::Tag(t) => Some(t.to_string()),
                    Reference::Digest(_) => None,
                };
                ("delete", None, None, tag)
            }
            (Route::Blob { .. }, &Method::DELETE, 202) => ("delete", None, None, None),
            _ => return None,
        };
        let digest = digest.or_else(|| match route {
            Route::Blob { digest, .. } => Some(digest.to_string()),
            Route::Manifest { reference: Reference::Digest(d), .. } => Some(d.to_string()),
            _ => None,
        });
        let host = seen.host.clone().or_else(|| self.host.clone()).unwrap_or_default();
        let url = digest.as_ref().map(|d| {
            let kind = if matches!(route, Route::Manifest { .. }) { "manifests" } else { "blobs" };
            format!("http://{host}/v2/{name}/{kind}/{d}")
        });
        let mut target = json!({ "repository": name.as_str() });
        if let Some(m) = &media_type {
            target["mediaType"] = json!(m);
        }
        if let Some(d) = &digest {
            target["digest"] = json!(d);
        }
        if let Some(n) = size {
            target["size"] = json!(n);
            target["length"] = json!(n);
        }
        if let Some(u) = url {
            target["url"] = json!(u);
        }
        if let Some(t) = tag {
            target["tag"] = json!(t);
        }
        let value = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "timestamp": donjon_core::time::rfc3339_now(),
            "action": action,
            "target": target,
            "request": {
                "id": seen.request_id.clone().unwrap_or_default(),
                "addr": seen.addr.clone().unwrap_or_default(),
                "host": host,
                "method": seen.method.as_str(),
                "useragent": seen.user_agent.clone().unwrap_or_default(),
            },
            "actor": match seen.actor.get() {
                Some(name) => json!({ "name": &*name }),
                None => json!({}),
            },
            "source": { "addr": self.host.clone().unwrap_or_default(), "instanceID": self.instance },
        });
        Some(Event { action, media_type, value })
    }
}

/// Publishes an event for every push, pull, mount and delete its service answers.
#[derive(Clone, Debug)]
pub struct EventsLayer {
    notifier: Notifier,
}

impl EventsLayer {
    /// Events go to `notifier`.
    pub fn new(notifier: Notifier) -> Self {
        Self { notifier }
    }
}

impl<S> tower_layer::Layer<S> for EventsLayer {
    type Service = Events<S>;

    fn layer(&self, inner: S) -> Events<S> {
        Events { inner, notifier: self.notifier.clone() }
    }
}

/// See [`EventsLayer`].
#[derive(Clone, Debug)]
pub struct Events<S> {
    inner: S,
    notifier: Notifier,
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

/// One endpoint's sender: batches of what it does not ignore, retried with backoff.
async fn send_loop(e: EndpointConfig, mut rx: broadcast::Receiver<Arc<Event>>) {
    let metrics = donjon_core::metrics::metrics();
    let client = match client() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(endpoint = %e.name, "notifications: no HTTP client: {err}");
            return;
        }
    };
    let wanted = |ev: &Event| {
        !e.ignore.actions.iter().any(|a| a == ev.action)
            && !ev
                .media_type
                .as_ref()
                .is_some_and(|m| e.ignore.mediatypes.iter().chain(e.ignoredmediatypes.iter()).any(|i| i == m))
    };
    loop {
        let mut batch: Vec<Arc<Event>> = vec![];
        // wait for one, then take what else is there
        while batch.is_empty() {
            match rx.recv().await {
                Ok(ev) if wanted(&ev) => batch.push(ev),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics.record_notifications_dropped(&e.name, n)
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(ev) if wanted(&ev) => batch.push(ev),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    metrics.record_notifications_dropped(&e.name, n)
                }
                Err(_) => break,
            }
        }
        let body =
            serde_json::to_vec(&json!({ "events": batch.iter().map(|ev| &ev.value).collect::<Vec<_>>() }))
                .unwrap_or_default();
        let mut wait = e.backoff.max(Duration::from_millis(10));
        let mut failures = 0u32;
        loop {
            match post(&client, &e, Bytes::from(body.clone())).await {
                Ok(()) => {
                    metrics.record_notifications_sent(&e.name, batch.len() as u64);
                    if failures >= e.threshold {
                        tracing::info!(endpoint = %e.name, "notifications: the endpoint takes events again");
                    }
                    break;
                }
                Err(err) => {
                    failures += 1;
                    metrics.record_notifications_failed(&e.name);
                    if failures == e.threshold.max(1) {
                        tracing::warn!(endpoint = %e.name, failures, "notifications: the endpoint keeps failing: {err}");
                    } else {
                        tracing::debug!(endpoint = %e.name, "notifications: {err}; retrying in {wait:?}");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

type Client = donjon_core::https::Client<http_body_util::Full<Bytes>>;

fn client() -> Result<Client, String> {
    Ok(donjon_core::https::ClientBuilder::new().build(donjon_core::https::tls_config(None)?))
}

async fn post(client: &Client, e: &EndpointConfig, body: Bytes) -> Result<(), String> {
    let mut req = Request::post(&e.url)
        .header(header::CONTENT_TYPE, MEDIA_TYPE)
        .body(http_body_util::Full::new(body))
        .map_err(|err| err.to_string())?;
    for (k, vs) in &e.headers {
        for v in vs {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) {
                req.headers_mut().append(k, v);
            }
        }
    }
    let resp = tokio::time::timeout(e.timeout, client.request(req))
        .await
        .map_err(|_| format!("no answer within {:?}", e.timeout))?
        .map_err(|err| err.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_endpoints_name_their_key() {
        for (yaml, key) in [
            ("endpoints: [{url: 'http://x/e'}]", "notifications.endpoints[0].name"),
            ("endpoints: [{name: a, url: 'ftp://x/e'}]", "notifications.endpoints[0].url"),
            (
                "endpoints: [{name: a, url: 'http://x/e', headers: {'a b': [c]}}]",
                "notifications.endpoints[0].headers",
            ),
            ("endpoints: [{name: a, url: 'http://x/e', timeout: 0s}]", "notifications.endpoints[0].timeout"),
            (
                "endpoints: [{name: a, url: 'http://x/e', ignore: {actions: [pul]}}]",
                "notifications.endpoints[0].ignore.actions",
            ),
        ] {
            let c: NotificationsConfig = serde_yaml::from_str(yaml).unwrap();
            assert_eq!(c.check().unwrap_err().key, key, "{yaml}");
        }
        let c: NotificationsConfig =
            serde_yaml::from_str("endpoints: [{name: a, url: 'https://x/e', disabled: true}]").unwrap();
        c.check().unwrap();
        assert!(!c.enabled());
    }
}
