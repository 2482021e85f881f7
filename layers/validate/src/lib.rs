//! donjon's image validation: the Kubernetes admission webhooks Trow serves, driven by one
//! image-reference policy that says why it decides.
//!
//! - `POST /validate-image` takes an `admission.k8s.io/v1` `AdmissionReview` of a Pod or of a
//!   workload with a pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet,
//!   ReplicationController, Job, CronJob, PodTemplate), checks the image of every container,
//!   init container and ephemeral container, and refuses the object naming every refused image
//!   and the reason ([`policy`]).
//! - `POST /mutate-image` (when a [`Mutator`] is configured) rewrites references of configured
//!   upstream hosts to this registry's pull-through names, as a JSON Patch ([`mutate`]).
//!
//! Every other request passes on unchanged. The API server calls webhooks over HTTPS only:
//! serve the registry with TLS (`--tls CERT,KEY`), or put the webhooks behind a TLS proxy.
//!
//! ```
//! use donjon_validate::{Policy, ValidationConfig, ValidationLayer};
//! use donjon_core::Body;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let config: ValidationConfig = serde_yaml::from_str("{default: Deny, allow: [quay.io/]}").unwrap();
//! let layer = ValidationLayer::new(Policy::new(&config, &[]).unwrap());
//! let next = service_fn(|_req: http::Request<Body>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
//! });
//! let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",
//!   "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
//!   "object":{"spec":{"containers":[{"name":"a","image":"quay.io/ok"},{"name":"b","image":"nginx"}]}}}}"#;
//! let req = http::Request::post("/validate-image").body(Body::from(review)).unwrap();
//! let resp = layer.layer(next).oneshot(req).await.unwrap();
//! let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
//! let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(answer["response"]["allowed"], false);
//! assert!(answer["response"]["status"]["message"].as_str().unwrap().contains("\"b\""));
//! # });
//! ```
//!
//! # Layout
//!
//! - [`config`]: the `image_validation` section ([`ValidationConfig`]) and its `build`;
//! - [`policy`]: prefixes, normalisation and the decision with its reason ([`Policy`]);
//! - [`review`]: `AdmissionReview` documents and where each kind keeps its images;
//! - [`mutate`]: the rewrite to pull-through names ([`Mutator`]);
//! - `layer.rs` and `service.rs`: [`ValidationLayer`] and its service [`Validation`].
#![forbid(unsafe_code)]

pub mod config;
mod layer;
pub mod mutate;
pub mod policy;
pub mod review;
mod service;

pub use config::{MutateConfig, ValidationConfig, Verdict};
pub use layer::{ValidationLayer, DEFAULT_MAX_BODY};
pub use mutate::Mutator;
pub use policy::{Decision, Policy};
pub use service::{Validation, MUTATE_PATH, VALIDATE_PATH};
