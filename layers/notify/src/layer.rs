//! [`EventsLayer`]: the middleware that publishes events.

use crate::service::Events;
use crate::Notifier;

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
