//! The `notifications` section: endpoints, their headers, timeouts and what they ignore.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use donjon_core::config::{duration, ConfigError};

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

/// The events middleware, when an endpoint is configured: its senders are spawned on the
/// runtime that builds it, and run until the process ends.
#[donjon_core::config::async_trait]
impl donjon_core::config::LayerConfig for NotificationsConfig {
    type Layer = crate::EventsLayer;
    async fn layer(
        &self,
        cx: &donjon_core::config::BuildContext,
    ) -> Result<Option<crate::EventsLayer>, ConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        let (notifier, senders) = crate::Notifier::new(self, cx.hostname.clone());
        for s in senders {
            tokio::spawn(s);
        }
        tracing::info!(endpoints = self.endpoints.len(), "event notifications on");
        Ok(Some(crate::EventsLayer::new(notifier)))
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
