//! Routing: from a request's host, path, method, headers and query to one route of a listener.
//!
//! [`RouteTable`] is compiled once per snapshot and listener; matching is pure (no I/O, no
//! clock) and allocation-free. Virtual hosts are picked as Envoy does: an exact domain first,
//! then the longest `*.suffix`, then `*`. Within a virtual host the first route in file order
//! whose conditions all hold wins; an index (exact paths in a map, prefixes in a byte trie,
//! regexes in a list) narrows the candidates without changing that order.

pub(crate) mod table;

pub use table::{Request, RouteTable};

#[cfg(test)]
mod tests;
