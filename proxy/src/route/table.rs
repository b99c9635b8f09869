//! The compiled route table of one listener.

use std::collections::HashMap;

use http::HeaderMap;
use strait_config::{DomainMatch, Listener, PathMatch, Route, RouteMatch, VirtualHost};

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Host without port, lowercase.
    pub host: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The method, as sent (methods are case-sensitive).
    pub method: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// The fields the proxy adds to a request before routing it, when the request has none.
const ADDED_FIELDS: [&str; 2] = ["x-request-id", "traceparent"];

/// A listener's virtual hosts and routes, indexed for matching.
#[derive(Debug)]
pub struct RouteTable {
    exact_hosts: HashMap<String, usize>,
    /// `(suffix with leading dot, virtual host)`, longest suffix first.
    suffix_hosts: Vec<(String, usize)>,
    any_host: Option<usize>,
    vhosts: Vec<VhostTable>,
    /// A route condition names a field the proxy adds to requests without one.
    reads_added: bool,
}

#[derive(Debug)]
struct VhostTable {
    routes: Vec<Route>,
    exact: HashMap<String, Vec<u32>>,
    prefixes: PrefixTrie,
    regexes: Vec<u32>,
}

impl RouteTable {
    /// Compiles the table of a listener.
    pub fn new(listener: &Listener) -> Self {
        let mut exact_hosts = HashMap::new();
        let mut suffix_hosts = Vec::new();
        let mut any_host = None;
        for (i, vhost) in listener.virtual_hosts().iter().enumerate() {
            for domain in vhost.domains() {
                match domain {
                    DomainMatch::Exact(name) => {
                        exact_hosts.entry(name.clone()).or_insert(i);
                    }
                    DomainMatch::Suffix(suffix) => suffix_hosts.push((suffix.clone(), i)),
                    DomainMatch::Any => {
                        any_host.get_or_insert(i);
                    }
                }
            }
        }
        // Stable sort: among equal lengths, file order decides.
        suffix_hosts.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        let vhosts = listener
            .virtual_hosts()
            .iter()
            .map(VhostTable::new)
            .collect();
        let reads_added = listener
            .virtual_hosts()
            .iter()
            .flat_map(|vhost| vhost.routes())
            .flat_map(|route| route.matcher().headers())
            .any(|condition| ADDED_FIELDS.contains(&condition.name()));
        Self {
            exact_hosts,
            suffix_hosts,
            any_host,
            vhosts,
            reads_added,
        }
    }

    /// Whether a route condition names a field the proxy adds before routing (`x-request-id`,
    /// `traceparent`): the request's map must then hold the proxy's values when it is routed.
    pub fn reads_added(&self) -> bool {
        self.reads_added
    }

    /// The first matching route, with its virtual host's index and its own index.
    pub fn find(&self, req: &Request<'_>) -> Option<(usize, usize, &Route)> {
        let vhost = self.vhost_index(req.host)?;
        let table = &self.vhosts[vhost];
        let index = table.find(req)?;
        Some((vhost, index, &table.routes[index]))
    }

    fn vhost_index(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact_hosts.get(host) {
            return Some(i);
        }
        self.suffix_hosts
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|&(_, i)| i)
            .or(self.any_host)
    }
}

impl VhostTable {
    fn new(vhost: &VirtualHost) -> Self {
        let mut exact: HashMap<String, Vec<u32>> = HashMap::new();
        let mut prefixes = PrefixTrie::default();
        let mut regexes = Vec::new();
        for (i, route) in vhost.routes().iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match route.matcher().path() {
                PathMatch::Exact(path) => exact.entry(path.clone()).or_default().push(i),
                PathMatch::Prefix(prefix) => prefixes.insert(prefix.as_bytes(), i),
                PathMatch::Regex(_) => regexes.push(i),
            }
        }
        Self {
            routes: vhost.routes().to_vec(),
            exact,
            prefixes,
            regexes,
        }
    }

    /// The lowest route index whose conditions all hold. Each candidate list is in ascending
    /// order, so a list is abandoned at its first passing entry or once past the best so far.
    fn find(&self, req: &Request<'_>) -> Option<usize> {
        let mut best = u32::MAX;
        let mut consider = |candidates: &[u32], check_path: bool| {
            for &i in candidates {
                if i >= best {
                    break;
                }
                let route = &self.routes[i as usize];
                if (!check_path || route.matcher().path().matches(req.path))
                    && conditions_hold(route.matcher(), req)
                {
                    best = i;
                    break;
                }
            }
        };
        if let Some(candidates) = self.exact.get(req.path) {
            consider(candidates, false);
        }
        self.prefixes.walk(req.path.as_bytes(), |candidates| {
            consider(candidates, false)
        });
        consider(&self.regexes, true);
        (best != u32::MAX).then_some(best as usize)
    }
}

/// Whether the method, header and query conditions of a route hold (the path is checked by the
/// caller).
pub(super) fn conditions_hold(matcher: &RouteMatch, req: &Request<'_>) -> bool {
    if !matcher.methods().is_empty() && !matcher.methods().iter().any(|m| m == req.method) {
        return false;
    }
    let headers_hold = matcher.headers().iter().all(|h| {
        let value = req.headers.get(h.name()).map(|v| v.to_str().unwrap_or(""));
        h.matches(value)
    });
    headers_hold
        && matcher
            .query()
            .iter()
            .all(|q| q.matches(query_value(req.query, q.name())))
}

/// The first value of a query parameter, undecoded; `Some("")` for a bare `name`.
pub(super) fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// A byte trie of path prefixes; each node lists the routes whose prefix ends there.
#[derive(Debug, Default)]
struct PrefixTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    edges: Vec<(u8, u32)>,
    routes: Vec<u32>,
}

impl PrefixTrie {
    fn insert(&mut self, prefix: &[u8], route: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut node = 0usize;
        for &byte in prefix {
            let found = self.nodes[node]
                .edges
                .iter()
                .find(|(b, _)| *b == byte)
                .map(|e| e.1);
            node = match found {
                Some(next) => next as usize,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    let next32 = u32::try_from(next).unwrap_or(u32::MAX);
                    self.nodes[node].edges.push((byte, next32));
                    next
                }
            };
        }
        // Routes are inserted in ascending order, so each list stays sorted.
        self.nodes[node].routes.push(route);
    }

    /// Calls `visit` with the route list of every node on `path`'s walk (every prefix of it).
    fn walk(&self, path: &[u8], mut visit: impl FnMut(&[u32])) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        for &byte in path {
            let Some(&(_, next)) = node.edges.iter().find(|(b, _)| *b == byte) else {
                return;
            };
            node = &self.nodes[next as usize];
            if !node.routes.is_empty() {
                visit(&node.routes);
            }
        }
    }
}
