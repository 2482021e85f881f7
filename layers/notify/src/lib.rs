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
//! use donjon_notify::NotificationsConfig;
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

mod config;
mod layer;
mod service;

pub use config::{EndpointConfig, Ignore, NotificationsConfig};
pub use layer::EventsLayer;
pub use service::{Events, EventsFuture};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use donjon_core::{Reference, Route};

/// The envelope's media type.
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// How many events an endpoint may fall behind before the oldest are dropped.
pub const QUEUE: usize = 4096;
/// The most events one POST carries.
const BATCH: usize = 64;

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
