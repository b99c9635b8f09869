//! What the control plane serves: every resource of the four xDS types, encoded once, with a
//! content hash, so that a stream can tell which types changed and send only those.
//!
//! Two kinds of listener live in LDS: the config's socket listeners, which wildcard subscribers
//! (Envoy, Strait proxies) get, and one API listener per exact virtual-host domain, which gRPC's
//! proxyless clients ask for by name (`xds:///payments` asks for the listener `payments`).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use strait_config::xds::{self, EdsEndpoint, type_url};
use strait_config::{Cluster, Config, DomainMatch};

/// The resource types in make-before-break order: clusters before their endpoints, both before
/// the listeners and routes that use them.
pub const TYPE_ORDER: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// Whether subscribing with no names means "everything" for this type (LDS and CDS).
pub fn wildcard_type(kind: &str) -> bool {
    kind == type_url::LISTENER || kind == type_url::CLUSTER
}

/// A resource, encoded.
#[derive(Debug, Clone)]
struct Entry {
    any: Any,
    hash: u64,
}

/// The resources of one type.
#[derive(Debug, Default, Clone)]
struct TypeSet {
    by_name: BTreeMap<String, Entry>,
    /// The names a wildcard subscriber gets.
    wildcard: BTreeSet<String>,
}

/// Which resources of a type a stream asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Every resource of the type (LDS/CDS with no names, or `*`).
    Wildcard,
    /// These names.
    Names(BTreeSet<String>),
}

/// What a subscription selects: a version, and each resource's name and content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// A hash of the selected names and contents.
    pub version: String,
    /// Name and content hash of each selected resource.
    pub items: Vec<(String, u64)>,
}

/// Every resource the control plane serves at one moment.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    serial: u64,
    types: BTreeMap<&'static str, TypeSet>,
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

impl Snapshot {
    /// The resources of `config`, each cluster's endpoints (with health) from `endpoints`.
    pub fn build(
        serial: u64,
        config: &Config,
        endpoints: &dyn Fn(&Cluster) -> Vec<EdsEndpoint>,
    ) -> Self {
        let resources = xds::to_resources(config);
        let mut types: BTreeMap<&'static str, TypeSet> = BTreeMap::new();
        let mut put = |type_url: &'static str, name: &str, any: Any, wildcard: bool| {
            let set = types.entry(type_url).or_default();
            let hash = hash_bytes(&any.value);
            set.by_name.insert(name.to_owned(), Entry { any, hash });
            if wildcard {
                set.wildcard.insert(name.to_owned());
            }
        };
        for l in &resources.listeners {
            put(type_url::LISTENER, &l.name, xds::any(l), true);
        }
        // gRPC proxyless clients: an API listener per exact domain, routed by the listener's
        // route configuration.
        for l in config.listeners() {
            for vhost in l.virtual_hosts() {
                for domain in vhost.domains() {
                    if let DomainMatch::Exact(name) = domain {
                        let api = listener::Listener {
                            name: name.clone(),
                            api_listener: Some(listener::ApiListener {
                                api_listener: Some(xds::any(&xds::connection_manager(
                                    l.name(),
                                    None,
                                ))),
                            }),
                            ..Default::default()
                        };
                        put(type_url::LISTENER, name, xds::any(&api), false);
                    }
                }
            }
        }
        for r in &resources.routes {
            put(type_url::ROUTE, &r.name, xds::any(r), false);
        }
        for c in &resources.clusters {
            put(type_url::CLUSTER, &c.name, xds::any(c), true);
        }
        for c in config.clusters() {
            let assignment = xds::load_assignment(c.name(), &endpoints(c));
            put(type_url::ENDPOINT, c.name(), xds::any(&assignment), false);
        }
        for type_url in TYPE_ORDER {
            types.entry(type_url).or_default();
        }
        Self { serial, types }
    }

    /// Which build this is (increases with every rebuild).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The version and the resources (name and content hash) a stream subscribed as
    /// `subscription` gets for `type_url`. The version is a hash of what is selected: the same
    /// resources give the same version, so unchanged types are not sent again.
    pub fn select(&self, type_url: &str, subscription: &Subscription) -> Selection {
        let Some(set) = self.types.get(type_url) else {
            return Selection {
                version: format!("{:016x}", 0),
                items: Vec::new(),
            };
        };
        let names: Vec<&String> = match subscription {
            Subscription::Wildcard => set.wildcard.iter().collect(),
            Subscription::Names(names) => names
                .iter()
                .filter(|n| set.by_name.contains_key(*n))
                .collect(),
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let mut items = Vec::with_capacity(names.len());
        for name in names {
            if let Some(entry) = set.by_name.get(name) {
                name.hash(&mut hasher);
                entry.hash.hash(&mut hasher);
                items.push((name.clone(), entry.hash));
            }
        }
        Selection {
            version: format!("{:016x}", hasher.finish()),
            items,
        }
    }

    /// One resource, encoded.
    pub fn resource(&self, type_url: &str, name: &str) -> Option<&Any> {
        self.types.get(type_url)?.by_name.get(name).map(|e| &e.any)
    }

    /// Every resource name of a type, for the admin API.
    pub fn names(&self, type_url: &str) -> Vec<String> {
        self.types
            .get(type_url)
            .map(|set| set.by_name.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The encoded size of every resource, for the admin API and benchmarks.
    pub fn bytes(&self) -> usize {
        self.types
            .values()
            .flat_map(|set| set.by_name.values())
            .map(|entry| entry.any.encoded_len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::{Format, parse};

    fn config() -> Config {
        parse(
            "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    virtual_hosts:\n      - name: v\n        domains: [\"echo\", \"*\"]\n        routes:\n          - match: { prefix: / }\n            cluster: up\nclusters:\n  - name: up\n    endpoints: [\"127.0.0.1:7001\"]\n",
            Format::Yaml,
        )
        .expect("valid")
    }

    fn healthy(cluster: &Cluster) -> Vec<EdsEndpoint> {
        cluster
            .endpoints()
            .iter()
            .map(|e| EdsEndpoint {
                address: e.address(),
                weight: e.weight(),
                healthy: true,
            })
            .collect()
    }

    #[test]
    fn wildcard_gets_socket_listeners_and_names_get_api_listeners() {
        let snapshot = Snapshot::build(1, &config(), &healthy);
        let all = snapshot
            .select(type_url::LISTENER, &Subscription::Wildcard)
            .items;
        assert_eq!(all.len(), 1, "only the socket listener");
        let named = Subscription::Names(BTreeSet::from(["echo".to_owned()]));
        let api = snapshot.select(type_url::LISTENER, &named).items;
        assert_eq!(api.len(), 1, "the API listener for the exact domain");
        let unknown = Subscription::Names(BTreeSet::from(["nope".to_owned()]));
        assert!(
            snapshot
                .select(type_url::LISTENER, &unknown)
                .items
                .is_empty()
        );
    }

    #[test]
    fn versions_follow_content_only() {
        let a = Snapshot::build(1, &config(), &healthy);
        let b = Snapshot::build(2, &config(), &healthy);
        for type_url in TYPE_ORDER {
            let sub = if wildcard_type(type_url) {
                Subscription::Wildcard
            } else {
                Subscription::Names(BTreeSet::from(["up".to_owned(), "l".to_owned()]))
            };
            assert_eq!(
                a.select(type_url, &sub).version,
                b.select(type_url, &sub).version,
                "{type_url}"
            );
        }
        let unhealthy = |c: &Cluster| {
            healthy(c)
                .into_iter()
                .map(|e| EdsEndpoint {
                    healthy: false,
                    ..e
                })
                .collect()
        };
        let c = Snapshot::build(3, &config(), &unhealthy);
        let eds = Subscription::Names(BTreeSet::from(["up".to_owned()]));
        assert_ne!(
            a.select(type_url::ENDPOINT, &eds).version,
            c.select(type_url::ENDPOINT, &eds).version,
            "a health change is a new EDS version"
        );
        assert_eq!(
            a.select(type_url::CLUSTER, &Subscription::Wildcard).version,
            c.select(type_url::CLUSTER, &Subscription::Wildcard).version,
            "and nothing else changes"
        );
    }
}
