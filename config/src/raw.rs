//! The file format as written: serde types that accept any well-shaped file.
//!
//! Unknown keys are rejected here (`deny_unknown_fields`); everything else (ranges, names,
//! references, enumerations, durations) is checked in [`validate`](crate::validate) so that one
//! pass reports every problem. For that reason enumerations are strings, numbers are `i64`, and
//! durations and header values are [`Scalar`]s. Field meanings are documented in
//! `docs/config.md` and on the [`model`](crate::model) types.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) admin: Option<Admin>,
    #[serde(default)]
    pub(crate) listeners: Vec<Listener>,
    #[serde(default)]
    pub(crate) clusters: Vec<Cluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub(crate) address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) protocol: Option<String>,
    pub(crate) limits: Option<Limits>,
    #[serde(default)]
    pub(crate) virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Default, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VirtualHost {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) domains: Vec<String>,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Match {
    pub(crate) prefix: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) regex: Option<String>,
    #[serde(default)]
    pub(crate) headers: Vec<ValueMatch>,
    #[serde(default)]
    pub(crate) query: Vec<ValueMatch>,
    #[serde(default)]
    pub(crate) methods: Vec<String>,
}

/// A header or query parameter condition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValueMatch {
    pub(crate) name: String,
    pub(crate) exact: Option<Scalar>,
    pub(crate) regex: Option<String>,
    pub(crate) present: Option<bool>,
    pub(crate) absent: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightedCluster {
    pub(crate) cluster: String,
    pub(crate) weight: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redirect {
    pub(crate) scheme: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) code: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectResponse {
    pub(crate) status: i64,
    #[serde(default)]
    pub(crate) body: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderChanges {
    #[serde(default)]
    pub(crate) add: Pairs,
    #[serde(default)]
    pub(crate) set: Pairs,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) protocol: Option<String>,
    pub(crate) lb: Option<String>,
    pub(crate) hash_key: Option<HashKey>,
    #[serde(default)]
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) connect_timeout: Option<Scalar>,
    pub(crate) pool: Option<Pool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HashKey {
    pub(crate) header: Option<String>,
    pub(crate) cookie: Option<String>,
    pub(crate) source_ip: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pool {
    pub(crate) max_idle: Option<i64>,
    pub(crate) max_connections: Option<i64>,
    pub(crate) idle_timeout: Option<Scalar>,
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

/// A map of header names to values, in file order.
#[derive(Debug, Default)]
pub(crate) struct Pairs(pub(crate) Vec<(String, Scalar)>);

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
