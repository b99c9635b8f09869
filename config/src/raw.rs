//! The file format as written: serde types that accept any well-shaped file, and write it back
//! for [`convert`](crate::convert).
//!
//! Unknown keys are rejected here (`deny_unknown_fields`); everything else (ranges, names,
//! references, enumerations, durations) is checked in [`validate`](crate::validate) so that one
//! pass reports every problem. For that reason enumerations are strings, numbers are `i64`, and
//! durations and header values are [`Scalar`]s. Field meanings are documented in
//! `docs/config.md` and on the [`model`](crate::model) types.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) admin: Option<Admin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) listeners: Vec<Listener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) tracing: Option<Tracing>,
    pub(crate) io: Option<String>,
    pub(crate) xds: Option<Admin>,
    pub(crate) registry: Option<Admin>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub(crate) address: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) protocol: Option<String>,
    pub(crate) limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    pub(crate) max_header_bytes: Option<i64>,
    pub(crate) max_headers: Option<i64>,
    pub(crate) header_read_timeout: Option<Scalar>,
    pub(crate) idle_timeout: Option<Scalar>,
    pub(crate) http2_max_concurrent_streams: Option<i64>,
    pub(crate) http2_max_pending_accept_reset_streams: Option<i64>,
    pub(crate) http2_max_local_error_reset_streams: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VirtualHost {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) routes: Vec<Route>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub(crate) name: Option<String>,
    #[serde(rename = "match")]
    pub(crate) matcher: Match,
    pub(crate) cluster: Option<String>,
    pub(crate) weighted_clusters: Option<Vec<WeightedCluster>>,
    pub(crate) redirect: Option<Redirect>,
    pub(crate) direct_response: Option<DirectResponse>,
    pub(crate) timeout: Option<Scalar>,
    pub(crate) request_headers: Option<HeaderChanges>,
    pub(crate) response_headers: Option<HeaderChanges>,
    pub(crate) prefix_rewrite: Option<String>,
    pub(crate) host_rewrite: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Match {
    pub(crate) prefix: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) query: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) methods: Vec<String>,
}

/// A header or query parameter condition.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValueMatch {
    pub(crate) name: String,
    pub(crate) exact: Option<Scalar>,
    pub(crate) regex: Option<String>,
    pub(crate) present: Option<bool>,
    pub(crate) absent: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightedCluster {
    pub(crate) cluster: String,
    pub(crate) weight: i64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redirect {
    pub(crate) scheme: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) code: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectResponse {
    pub(crate) status: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) body: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderChanges {
    #[serde(default, skip_serializing_if = "Pairs::is_empty")]
    pub(crate) add: Pairs,
    #[serde(default, skip_serializing_if = "Pairs::is_empty")]
    pub(crate) set: Pairs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) remove: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) protocol: Option<String>,
    pub(crate) lb: Option<String>,
    pub(crate) hash_key: Option<HashKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) connect_timeout: Option<Scalar>,
    pub(crate) pool: Option<Pool>,
    pub(crate) discovery: Option<Discovery>,
    pub(crate) health_check: Option<HealthCheck>,
    /// Endpoints come from EDS (a cluster converted from xDS): an empty list is valid.
    #[serde(skip)]
    pub(crate) eds: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Discovery {
    pub(crate) dns: Option<String>,
    pub(crate) registry: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheck {
    pub(crate) protocol: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) service: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) expected_statuses: Vec<i64>,
    pub(crate) interval: Option<Scalar>,
    pub(crate) timeout: Option<Scalar>,
    pub(crate) jitter: Option<Scalar>,
    pub(crate) healthy_threshold: Option<i64>,
    pub(crate) unhealthy_threshold: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HashKey {
    pub(crate) header: Option<String>,
    pub(crate) cookie: Option<String>,
    pub(crate) source_ip: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pool {
    pub(crate) max_idle: Option<i64>,
    pub(crate) max_connections: Option<i64>,
    pub(crate) idle_timeout: Option<Scalar>,
    pub(crate) purge_interval: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLog {
    pub(crate) output: Option<String>,
    pub(crate) format: Option<String>,
    pub(crate) template: Option<String>,
    pub(crate) queue_size: Option<i64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tracing {
    pub(crate) sample_rate: Option<Number>,
}

/// An endpoint: `"ip:port"` or `{ address, weight }`.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) address: String,
    pub(crate) weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointMap {
    address: String,
    weight: Option<i64>,
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;

        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = Endpoint;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""ip:port" or { address: "ip:port", weight: N }"#)
            }

            fn visit_str<E: de::Error>(self, address: &str) -> Result<Endpoint, E> {
                Ok(Endpoint {
                    address: address.to_owned(),
                    weight: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Endpoint, A::Error> {
                let EndpointMap { address, weight } =
                    EndpointMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Endpoint { address, weight })
            }
        }

        deserializer.deserialize_any(EndpointVisitor)
    }
}

impl Serialize for Endpoint {
    /// The short form, `"ip:port"`, unless a weight is set.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.weight {
            None => serializer.serialize_str(&self.address),
            Some(weight) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("address", &self.address)?;
                map.serialize_entry("weight", &weight)?;
                map.end()
            }
        }
    }
}

/// A scalar kept as text, whatever its YAML or JSON type: `timeout: 5` reaches validation as
/// `"5"` and gets a precise problem instead of a type error, and `x-version: 2` is a header
/// value `"2"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub(crate) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or number")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

impl Serialize for Scalar {
    /// As a string: the type it was written with is not kept.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A number, or the scalar written where a number belongs, so that `sample_rate: "0.5"` gets a
/// precise problem instead of a type error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Number {
    /// Any YAML or JSON number, as `f64`.
    Value(f64),
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;

        impl Visitor<'_> for NumberVisitor {
            type Value = Number;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Number, E> {
                Ok(Number::Text(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Number, E> {
                Ok(Number::Bool(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Value(v as f64))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number::Value(v as f64))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Value(v))
            }
        }

        deserializer.deserialize_any(NumberVisitor)
    }
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(n) => serializer.serialize_f64(*n),
            Self::Text(text) => serializer.serialize_str(text),
            Self::Bool(b) => serializer.serialize_bool(*b),
        }
    }
}

/// A map of header names to values, in file order.
#[derive(Debug, Default)]
pub(crate) struct Pairs(pub(crate) Vec<(String, Scalar)>);

impl Pairs {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;

        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of header names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, Scalar>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }

        deserializer.deserialize_map(PairsVisitor)
    }
}

impl Serialize for Pairs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}
