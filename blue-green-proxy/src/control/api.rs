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

/// `PUT /v1/split`: split an app's new clients between its target and another, compare-and-set
/// (the app's target must be `current`). Ended by a `PUT /v1/target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSplit {
    /// The app.
    pub app: String,
    /// The app's target now, `host:port`, which keeps `100 - percent` of new clients.
    pub current: String,
    /// The new target, `host:port`.
    pub next: String,
    /// The share of new clients sent to `next`, 1 to 99.
    pub percent: u8,
}

/// `PUT /v1/preview`: make a staged target reachable at a preview host name (`target` and
/// `host` given), or end the app's preview (`target` null or absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPreview {
    /// The app.
    pub app: String,
    /// The preview host name (an exact host name no app has); needed with `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The staged target, `host:port`; absent or null ends the preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
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

    #[test]
    fn a_split_takes_a_percent_that_fits_a_byte_and_no_other_fields() {
        let ok: SetSplit =
            serde_json::from_str(r#"{"app":"a","current":"h:1","next":"h:2","percent":20}"#)
                .unwrap();
        assert_eq!(ok.percent, 20);
        for bad in [
            r#"{"app":"a","current":"h:1","next":"h:2","percent":300}"#,
            r#"{"app":"a","current":"h:1","next":"h:2","percent":-1}"#,
            r#"{"app":"a","current":"h:1","next":"h:2","percent":"20"}"#,
            r#"{"app":"a","current":"h:1","next":"h:2"}"#,
            r#"{"app":"a","current":"h:1","next":"h:2","percent":20,"sticky":false}"#,
        ] {
            assert!(serde_json::from_str::<SetSplit>(bad).is_err(), "{bad}");
        }
        let clear: SetPreview = serde_json::from_str(r#"{"app":"a"}"#).unwrap();
        assert_eq!((clear.host, clear.target), (None, None));
    }
}
