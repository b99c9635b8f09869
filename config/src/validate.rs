//! Validation: [`raw`](crate::raw) → [`model`](crate::model), collecting every problem.
//!
//! Each validator checks all of its fields before giving up, pushes one [`Problem`] per broken
//! rule, and returns `None` when a value it needs could not be parsed. Cross-field rules
//! (uniqueness, `prefix_rewrite` needing a prefix) only push a problem; [`config`] builds the
//! model only when no problem was pushed at all, so nothing invalid escapes. References are
//! checked against the names as written, so a cluster with a bad endpoint does not also make
//! every route that names it "unknown".

mod cluster;
mod listener;
mod observability;
mod route;
mod value;

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::code;
use crate::model::{Admin, Config, IoBackend};
use crate::problem::{Problem, Problems, quote};
use crate::raw;

use self::value::Violation;

/// Validates a parsed file into a model, or lists everything wrong with it.
pub(crate) fn config(raw: raw::Config) -> Result<Config, Problems> {
    let mut problems = Problems::default();
    // Problems come out in the order of the format: admin, listeners, clusters, access_log,
    // tracing, io, xds, registry.
    let admin = match &raw.admin {
        None => Some(None),
        Some(admin) => self::admin(admin, &raw.listeners, &mut problems).map(Some),
    };
    let cluster_names: Vec<&str> = raw.clusters.iter().map(|c| c.name.as_str()).collect();

    if raw.listeners.is_empty() {
        problems.push(
            Problem::new(
                "listeners",
                code::NO_LISTENERS,
                "[]",
                "must list at least one listener",
            )
            .with_hint("a proxy without a listener serves nothing"),
        );
    }
    let listeners = listener::listeners(&raw.listeners, &cluster_names, &mut problems);
    let clusters = cluster::clusters(&raw.clusters, &mut problems);
    let access_log = observability::access_log(raw.access_log.as_ref(), &mut problems);
    let tracing = observability::tracing(raw.tracing.as_ref(), &mut problems);
    let io = one_of(
        raw.io.as_deref(),
        IO_BACKENDS,
        IoBackend::default(),
        "io",
        code::IO_BACKEND,
        &mut problems,
    );

    let mut address = |raw: Option<&raw::Admin>, path: &str, code: &'static str| match raw {
        None => Some(None),
        Some(raw) => check(
            &mut problems,
            path,
            code,
            quote(&raw.address),
            value::socket_addr(&raw.address, false),
        )
        .map(Some),
    };
    let xds = address(raw.xds.as_ref(), "xds.address", code::XDS_ADDRESS);
    let registry = address(
        raw.registry.as_ref(),
        "registry.address",
        code::REGISTRY_ADDRESS,
    );

    match (
        listeners, clusters, admin, access_log, tracing, io, xds, registry,
    ) {
        (
            Some(listeners),
            Some(clusters),
            Some(admin),
            Some(access_log),
            Some(tracing),
            Some(io),
            Some(xds),
            Some(registry),
        ) if problems.is_empty() => Ok(Config {
            admin,
            listeners,
            clusters,
            access_log,
            tracing,
            io,
            xds,
            registry,
        }),
        _ => Err(problems),
    }
}

const IO_BACKENDS: &[(&str, IoBackend)] = &[
    ("auto", IoBackend::Auto),
    ("uring", IoBackend::Uring),
    ("epoll", IoBackend::Epoll),
];

fn admin(raw: &raw::Admin, listeners: &[raw::Listener], problems: &mut Problems) -> Option<Admin> {
    let path = "admin.address";
    let address = check(
        problems,
        path,
        code::ADMIN_ADDRESS,
        quote(&raw.address),
        value::socket_addr(&raw.address, false),
    )?;
    let taken = listeners
        .iter()
        .position(|l| value::socket_addr(&l.address, true).ok() == Some(address));
    if let Some(index) = taken {
        problems.push(
            Problem::new(
                path,
                code::ADMIN_ADDRESS_IN_USE,
                quote(&raw.address),
                "must not be used by a listener",
            )
            .with_hint(format!("already used by listeners[{index}]")),
        );
        return None;
    }
    Some(Admin { address })
}

/// Turns a leaf check into a problem at `path`, or its value.
fn check<T>(
    problems: &mut Problems,
    path: &str,
    code: &'static str,
    value: String,
    result: Result<T, Violation>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(violation) => {
            problems.push(violation.at(path, code, value));
            None
        }
    }
}

/// An enumeration value (`default` when absent), or the problem listing the valid ones.
fn one_of<T: Copy>(
    raw: Option<&str>,
    valid: &[(&str, T)],
    default: T,
    path: &str,
    code: &'static str,
    problems: &mut Problems,
) -> Option<T> {
    let Some(text) = raw else {
        return Some(default);
    };
    if let Some((_, value)) = valid.iter().find(|(name, _)| *name == text) {
        return Some(*value);
    }
    let names: Vec<&str> = valid.iter().map(|(name, _)| *name).collect();
    problems.push(
        Problem::new(path, code, quote(text), "must be a known value")
            .with_hint(format!("valid values: {}", names.join(", "))),
    );
    None
}

/// Checks an optional value: `Some(None)` when absent, `None` when present and invalid.
fn optional<T>(raw: Option<&str>, check: impl FnOnce(&str) -> Option<T>) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(text) => check(text).map(Some),
    }
}

/// Validates every item before deciding: `None` if any item was invalid.
fn all<T>(items: impl IntoIterator<Item = Option<T>>) -> Option<Vec<T>> {
    let items: Vec<Option<T>> = items.into_iter().collect();
    items.into_iter().collect()
}

/// Remembers where each unique value was first used, to say "already used by …".
#[derive(Debug)]
struct FirstUse<K>(HashMap<K, String>);

impl<K: std::hash::Hash + Eq> FirstUse<K> {
    fn new() -> Self {
        Self(HashMap::new())
    }

    /// Records `key` at `path`, or returns where it was used first.
    fn claim(&mut self, key: K, path: &str) -> Result<(), &str> {
        match self.0.entry(key) {
            Entry::Vacant(entry) => {
                entry.insert(path.to_owned());
                Ok(())
            }
            Entry::Occupied(entry) => Err(entry.into_mut().as_str()),
        }
    }
}

/// The keys set among mutually exclusive ones, as `{ prefix, regex }` (or `{}`).
fn keys(set: &[(&str, bool)]) -> String {
    let names: Vec<&str> = set
        .iter()
        .filter(|(_, on)| *on)
        .map(|(key, _)| *key)
        .collect();
    if names.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", names.join(", "))
    }
}

/// `known: …` with up to five names, nearest to `wanted` first.
fn nearest_hint(wanted: &str, known: &[&str]) -> String {
    if known.is_empty() {
        return "no clusters are defined".to_owned();
    }
    let mut ranked: Vec<&str> = known.to_vec();
    ranked.sort_by_key(|name| (edit_distance(wanted, name), *name));
    ranked.dedup();
    ranked.truncate(5);
    format!("known: {}", crate::problem::quote_list(ranked))
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("payments", "payments"), 0);
        assert_eq!(edit_distance("paymnets", "payments"), 2);
        assert_eq!(edit_distance("web", "web-a"), 2);
        assert_eq!(edit_distance("abc", ""), 3);
    }

    #[test]
    fn hint_lists_nearest_five_first() {
        let known = ["search", "payments", "a", "b", "c", "d", "payment"];
        assert_eq!(
            nearest_hint("paymnets", &known),
            r#"known: "payments", "payment", "a", "b", "c""#
        );
        assert_eq!(nearest_hint("x", &[]), "no clusters are defined");
    }
}
