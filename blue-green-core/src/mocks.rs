//! Ready [mockall](https://docs.rs/mockall) mocks of the four traits (feature `mocks`), so an
//! embedder's tests need not re-declare the signatures with `mock!`:
//! [`MockRuntime`], [`MockHealthProbe`], [`MockRouter`], [`MockStateStore`].
//!
//! ```
//! use blue_green_core::mocks::MockRouter;
//! use blue_green_core::{Endpoint, Router};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut router = MockRouter::new();
//! router
//!     .expect_target()
//!     .returning(|| Ok(Some(Endpoint::new("127.0.0.1", 8081))));
//! assert_eq!(router.target().await.unwrap(), Some(Endpoint::new("127.0.0.1", 8081)));
//! # }
//! ```
//!
//! With `mockall` in the embedder's own dev-dependencies, `mockall::predicate` and
//! `mockall::Sequence` work on these as on any mock. For whole-engine tests the in-memory world
//! of [`testing`](crate::testing) (feature `testing`) is usually shorter.

#![allow(missing_docs)] // mockall generates the expect_* methods.

use std::time::Duration;

use async_trait::async_trait;
use mockall::mock;

use crate::error::{ComponentError, LockHolder};
use crate::model::{Color, Endpoint, Health, Instance, InstanceState, Release};
use crate::probe::HealthProbe;
use crate::router::{Responses, RouteReceipt, Router, Split};
use crate::runtime::Runtime;
use crate::state::{AppState, DeployRecord, Lock, LockError, StateStore};

mock! {
    /// A mock [`Runtime`].
    pub Runtime {}
    #[async_trait]
    impl Runtime for Runtime {
        async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError>;
        async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError>;
        async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), ComponentError>;
        async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError>;
        async fn remove(&self, instance: &Instance) -> Result<(), ComponentError>;
        async fn list(&self) -> Result<Vec<Instance>, ComponentError>;
        async fn logs(&self, instance: &Instance, lines: usize) -> Result<Vec<String>, ComponentError>;
    }
}

mock! {
    /// A mock [`HealthProbe`].
    pub HealthProbe {}
    #[async_trait]
    impl HealthProbe for HealthProbe {
        async fn check(&self, instance: &Instance) -> Health;
    }
}

// `preview` keeps the trait's default (no preview): mockall cannot mock an async method
// whose argument is an `Option<&T>` (asomers/mockall#61, #571). Tests of the preview use the
// fake router of `testing`.
mock! {
    /// A mock [`Router`] (`preview` is the trait's default: no preview).
    pub Router {}
    #[async_trait]
    impl Router for Router {
        async fn target(&self) -> Result<Option<Endpoint>, ComponentError>;
        async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError>;
        async fn verify(&self, instance: &Instance, receipt: &RouteReceipt) -> Result<(), ComponentError>;
        fn can_split(&self) -> bool;
        async fn split(&self, split: &Split) -> Result<RouteReceipt, ComponentError>;
        async fn current_split(&self) -> Result<Option<Split>, ComponentError>;
        async fn responses(&self, endpoint: &Endpoint) -> Result<Option<Responses>, ComponentError>;
        async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError>;
        async fn open_connections(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError>;
        async fn cut(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError>;
    }
}

mock! {
    /// A mock [`StateStore`].
    pub StateStore {}
    #[async_trait]
    impl StateStore for StateStore {
        async fn lock(&self, holder: &LockHolder) -> Result<Lock, LockError>;
        async fn load(&self) -> Result<AppState, ComponentError>;
        async fn save(&self, state: &AppState) -> Result<(), ComponentError>;
        async fn append_history(&self, record: &DeployRecord) -> Result<(), ComponentError>;
        async fn history(&self) -> Result<Vec<DeployRecord>, ComponentError>;
        async fn recent_history(&self, n: usize) -> Result<Vec<DeployRecord>, ComponentError>;
    }
}
