//! The fake router's gradual shift, preview and response counts: what the world keeps, and
//! how a test sets and reads it.

use std::collections::HashMap;

use crate::model::Endpoint;
use crate::router::{Responses, Split};

use super::FakeWorld;

/// What the fake router keeps besides its target.
#[derive(Debug, Default)]
pub(crate) struct SplitWorld {
    /// Whether the router says it can split ([`Router::can_split`](crate::Router::can_split)).
    pub(crate) can_split: bool,
    /// The split in place (its `current` is the target).
    pub(crate) split: Option<Split>,
    /// The endpoint previewed, if any.
    pub(crate) preview: Option<Endpoint>,
    /// What `preview` answers as the address of a preview.
    pub(crate) preview_address: Option<String>,
    /// Counted responses by endpoint so far.
    pub(crate) responses: HashMap<Endpoint, Responses>,
    /// Added to the counts of an endpoint where an instance of the release (the key) answers,
    /// at each reading, as traffic would; releases not here are not counted.
    pub(crate) per_reading: HashMap<String, Responses>,
}

impl FakeWorld {
    /// Whether the router can split traffic (default: it cannot, like most routers'
    /// defaults; then `split` fails as the trait's default does).
    pub fn set_can_split(&self, can: bool) {
        self.lock().splits.can_split = can;
    }

    /// The split in place, as the fake router keeps it.
    pub fn split(&self) -> Option<Split> {
        self.lock().splits.split.clone()
    }

    /// The endpoint the router previews, if any.
    pub fn previewed(&self) -> Option<Endpoint> {
        self.lock().splits.preview.clone()
    }

    /// What `preview(Some(..))` answers as the preview's address (default: none, as a
    /// router without a preview host).
    pub fn set_preview_address(&self, address: Option<&str>) {
        self.lock().splits.preview_address = address.map(str::to_string);
    }

    /// The router counts the responses of instances of `release`: `per_reading` more at each
    /// reading ([`Router::responses`](crate::Router::responses)), as steady traffic would.
    /// Other releases are not counted (`None`: the watch probes only).
    pub fn count_responses(&self, release: &str, per_reading: Responses) {
        self.lock()
            .splits
            .per_reading
            .insert(release.to_string(), per_reading);
    }
}
