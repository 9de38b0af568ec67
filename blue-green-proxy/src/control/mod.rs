//! The control socket: a Unix socket (mode 0600, other users refused) with a small JSON API
//! over HTTP/1.1, and [`ControlClient`], the client for it.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/status` | | [`Status`](crate::Status) |
//! | `PUT /v1/target` | [`SetTarget`] | [`Switched`](crate::Switched), `409` if `expect` does not match |
//! | `PUT /v1/split` | [`SetSplit`] | [`SplitAnswer`](crate::SplitAnswer), `409` if `current` is not the app's target |
//! | `PUT /v1/preview` | [`SetPreview`] | [`PreviewAnswer`](crate::PreviewAnswer) |
//! | `POST /v1/pause`, `/v1/resume` | | [`ModeAnswer`] |
//! | `POST /v1/maintenance` | [`Maintenance`] | [`ModeAnswer`] |
//! | `POST /v1/drain` | [`DrainWait`] | [`Drain`](crate::Drain), once drained or at `within_ms` |
//! | `POST /v1/cut` | [`CutRequest`] | [`CutAnswer`] |
//! | `POST /v1/handover` | `Upgrade: blue-green-handover` | `101`, then the listening sockets pass to the new process ([`Proxy::take_over`](crate::Proxy::take_over)); `409` if one is under way |
//!
//! While a handover is under way, changes are refused with `503`; [`ControlClient`] sends them
//! again until its timeout.
//!
//! Errors are `{"error": "…"}` with a 4xx/5xx status; a refused request changes nothing.

pub mod api;
pub mod client;
pub(crate) mod server;

pub use api::{
    CutAnswer, CutRequest, DrainWait, ErrorAnswer, Maintenance, ModeAnswer, SetPreview, SetSplit,
    SetTarget,
};
pub use client::ControlClient;
