//! The JSON bodies of the control API.

use serde::{Deserialize, Deserializer, Serialize};

use crate::gate::Mode;

/// `PUT /v1/target`: set an app's target, compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTarget {
    /// The app.
    pub app: String,
    /// The new target, `host:port`.
    pub target: String,
    /// The target the app must have now: absent = any, `null` = none yet, `"host:port"` = that.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expect: Option<Option<String>>,
    /// The app's host names; absent keeps the ones it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

/// Tells a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `POST /v1/maintenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// `true` to answer every request with the maintenance page, `false` to serve again.
    pub on: bool,
}

/// The answer to a mode change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeAnswer {
    /// The mode now.
    pub mode: Mode,
}

/// `POST /v1/drain`: wait until nothing is in flight to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainWait {
    /// The endpoint, `host:port`.
    pub endpoint: String,
    /// The longest wait, in milliseconds (at most one hour).
    pub within_ms: u64,
}

/// `POST /v1/cut`: close what is open to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutRequest {
    /// The endpoint, `host:port`.
    pub endpoint: String,
}

/// The answer to a cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutAnswer {
    /// The endpoint.
    pub endpoint: String,
    /// Requests and upgraded connections it closed.
    pub cut: u64,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What was wrong, and what to do.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_tells_absent_from_null() {
        let any: SetTarget = serde_json::from_str(r#"{"app":"a","target":"h:1"}"#).unwrap();
        assert_eq!(any.expect, None);
        let none: SetTarget =
            serde_json::from_str(r#"{"app":"a","target":"h:1","expect":null}"#).unwrap();
        assert_eq!(none.expect, Some(None));
        let some: SetTarget =
            serde_json::from_str(r#"{"app":"a","target":"h:1","expect":"h:2"}"#).unwrap();
        assert_eq!(some.expect, Some(Some("h:2".into())));
        assert_eq!(
            serde_json::from_str::<SetTarget>(&serde_json::to_string(&none).unwrap()).unwrap(),
            none
        );
        assert!(serde_json::from_str::<SetTarget>(r#"{"app":"a","target":"h:1","x":1}"#).is_err());
    }
}
