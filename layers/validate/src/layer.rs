use std::sync::Arc;

use donjon_core::Store;
use tower_layer::Layer;

use crate::mutate::Mutator;
use crate::policy::{Decision, Policy};
use crate::service::{Shared, Validation};

/// The largest `AdmissionReview` read (an `UPDATE` carries the object twice; the API server
/// keeps objects under 1.5 MiB).
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// Serves the Kubernetes admission webhooks `POST /validate-image` (the policy's verdict on
/// every image of a workload) and, when a [`Mutator`] is set, `POST /mutate-image`; passes
/// every other request on. See the crate docs.
///
/// ```
/// use donjon_validate::{Policy, ValidationConfig, ValidationLayer};
///
/// let config: ValidationConfig = serde_yaml::from_str("{default: Deny, allow: [quay.io/]}").unwrap();
/// let layer = ValidationLayer::new(Policy::new(&config, &[]).unwrap());
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ValidationLayer {
    pub(crate) shared: Arc<Shared>,
}

impl ValidationLayer {
    /// A layer deciding by `policy`, without the mutating webhook.
    pub fn new(policy: Policy) -> Self {
        Self { shared: Arc::new(Shared { policy, mutator: None, store: None, max_body: DEFAULT_MAX_BODY }) }
    }

    /// Serves `/mutate-image` with `mutator`.
    pub fn mutator(mut self, mutator: Mutator) -> Self {
        Arc::make_mut(&mut self.shared).mutator = Some(mutator);
        self
    }

    /// The store that answers whether a local image exists (the policy's `check_local`).
    /// Without one, that check is not made.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        Arc::make_mut(&mut self.shared).store = Some(store);
        self
    }

    /// The largest review body read (default [`DEFAULT_MAX_BODY`]); larger ones get 413.
    pub fn max_body(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_body = bytes;
        self
    }

    /// What the policy says of `image`, the store consulted as the webhook would: for
    /// `donjon check-image` and for tests.
    pub async fn decide(&self, image: &str) -> Decision {
        self.shared.decide(image).await
    }
}

impl<S> Layer<S> for ValidationLayer {
    type Service = Validation<S>;

    fn layer(&self, inner: S) -> Validation<S> {
        Validation::new(self.clone(), inner)
    }
}
