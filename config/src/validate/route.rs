//! Routes: match, action and per-route policies.

mod action;

use std::time::Duration;

use crate::code;
use crate::model::{HeaderChanges, PathMatch, Route, RouteMatch, ValueMatcher, ValueRule};
use crate::problem::{Problem, Problems, quote};
use crate::raw;

use super::{all, check, keys, optional, value};

/// Time allowed for the upstream to answer when a route sets no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) fn routes(
    raw: &[raw::Route],
    vhost: &str,
    clusters: &[&str],
    problems: &mut Problems,
) -> Option<Vec<Route>> {
    if raw.is_empty() {
        problems.push(Problem::new(
            format!("{vhost}.routes"),
            code::NO_ROUTES,
            "[]",
            "must list at least one route",
        ));
        return None;
    }
    all(raw
        .iter()
        .enumerate()
        .map(|(i, route)| self::route(route, &format!("{vhost}.routes[{i}]"), clusters, problems)))
}

fn route(
    raw: &raw::Route,
    path: &str,
    clusters: &[&str],
    problems: &mut Problems,
) -> Option<Route> {
    let name = optional(raw.name.as_deref(), |name| {
        let path = format!("{path}.name");
        check(
            problems,
            &path,
            code::ROUTE_NAME,
            quote(name),
            value::name(name),
        )
    });
    let matcher = route_match(&raw.matcher, &format!("{path}.match"), problems);
    let action = action::action(raw, path, clusters, problems);
    let timeout = match &raw.timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(raw::Scalar(text)) => check(
            problems,
            &format!("{path}.timeout"),
            code::ROUTE_TIMEOUT,
            quote(text),
            value::duration(text),
        ),
    };
    let request_headers = header_changes(
        raw.request_headers.as_ref(),
        &format!("{path}.request_headers"),
        problems,
    );
    let response_headers = header_changes(
        raw.response_headers.as_ref(),
        &format!("{path}.response_headers"),
        problems,
    );
    let prefix_rewrite = optional(raw.prefix_rewrite.as_deref(), |text| {
        let path = format!("{path}.prefix_rewrite");
        if raw.matcher.prefix.is_none() {
            problems.push(
                Problem::new(
                    &path,
                    code::PREFIX_REWRITE,
                    quote(text),
                    "needs a prefix match",
                )
                .with_hint("it replaces the matched prefix; set match.prefix"),
            );
        }
        check(problems, &path, code::PATH, quote(text), value::path(text))
    });
    let host_rewrite = optional(raw.host_rewrite.as_deref(), |text| {
        let path = format!("{path}.host_rewrite");
        check(
            problems,
            &path,
            code::AUTHORITY,
            quote(text),
            value::authority(text),
        )
    });
    Some(Route {
        name: name?,
        matcher: matcher?,
        action: action?,
        timeout: timeout?,
        request_headers: request_headers?,
        response_headers: response_headers?,
        prefix_rewrite: prefix_rewrite?,
        host_rewrite: host_rewrite?,
    })
}

fn route_match(raw: &raw::Match, path: &str, problems: &mut Problems) -> Option<RouteMatch> {
    let set = [
        ("prefix", raw.prefix.is_some()),
        ("path", raw.path.is_some()),
        ("regex", raw.regex.is_some()),
    ];
    let path_match = match (&raw.prefix, &raw.path, &raw.regex) {
        (Some(text), None, None) => check(
            problems,
            &format!("{path}.prefix"),
            code::PATH,
            quote(text),
            value::path(text),
        )
        .map(PathMatch::Prefix),
        (None, Some(text), None) => check(
            problems,
            &format!("{path}.path"),
            code::PATH,
            quote(text),
            value::path(text),
        )
        .map(PathMatch::Exact),
        (None, None, Some(text)) => check(
            problems,
            &format!("{path}.regex"),
            code::REGEX,
            quote(text),
            value::anchored_regex(text),
        )
        .map(PathMatch::Regex),
        _ => {
            problems.push(
                Problem::new(
                    path,
                    code::PATH_MATCH,
                    keys(&set),
                    "must set exactly one of prefix, path, regex",
                )
                .with_hint(r#"example: { prefix: "/" }"#),
            );
            None
        }
    };
    let headers = all(raw.headers.iter().enumerate().map(|(i, m)| {
        let path = format!("{path}.headers[{i}]");
        let name = check(
            problems,
            &format!("{path}.name"),
            code::HEADER_NAME,
            quote(&m.name),
            value::header_name(&m.name),
        );
        let rule = value_rule(m, &path, true, problems);
        Some(ValueMatcher {
            name: name?,
            rule: rule?,
        })
    }));
    let query = all(raw.query.iter().enumerate().map(|(i, m)| {
        let path = format!("{path}.query[{i}]");
        if m.name.is_empty() {
            problems.push(Problem::new(
                format!("{path}.name"),
                code::QUERY_NAME,
                quote(&m.name),
                "must not be empty",
            ));
        }
        let rule = value_rule(m, &path, false, problems);
        Some(ValueMatcher {
            name: m.name.clone(),
            rule: rule?,
        })
    }));
    let methods = all(raw.methods.iter().enumerate().map(|(i, method)| {
        check(
            problems,
            &format!("{path}.methods[{i}]"),
            code::METHOD,
            quote(method),
            value::method(method),
        )
    }));
    Some(RouteMatch {
        path: path_match?,
        headers: headers?,
        query: query?,
        methods: methods?,
    })
}

/// The rule of a header (`is_header`) or query parameter condition.
fn value_rule(
    raw: &raw::ValueMatch,
    path: &str,
    is_header: bool,
    problems: &mut Problems,
) -> Option<ValueRule> {
    let set = [
        ("exact", raw.exact.is_some()),
        ("regex", raw.regex.is_some()),
        ("present", raw.present.is_some()),
        ("absent", raw.absent.is_some()),
    ];
    match (&raw.exact, &raw.regex, raw.present, raw.absent) {
        (Some(raw::Scalar(text)), None, None, None) if is_header => check(
            problems,
            &format!("{path}.exact"),
            code::HEADER_VALUE,
            quote(text),
            value::header_value(text),
        )
        .map(ValueRule::Exact),
        (Some(raw::Scalar(text)), None, None, None) => Some(ValueRule::Exact(text.clone())),
        (None, Some(text), None, None) => check(
            problems,
            &format!("{path}.regex"),
            code::REGEX,
            quote(text),
            value::anchored_regex(text),
        )
        .map(ValueRule::Regex),
        (None, None, Some(true), None) => Some(ValueRule::Present),
        (None, None, None, Some(true)) => Some(ValueRule::Absent),
        (None, None, Some(false), None) | (None, None, None, Some(false)) => {
            let (key, opposite) = if raw.present.is_some() {
                ("present", "absent")
            } else {
                ("absent", "present")
            };
            problems.push(
                Problem::new(
                    format!("{path}.{key}"),
                    code::VALUE_MATCH,
                    "false",
                    "must be true",
                )
                .with_hint(format!("to require the opposite, use {opposite}: true")),
            );
            None
        }
        _ => {
            problems.push(Problem::new(
                path,
                code::VALUE_MATCH,
                keys(&set),
                "must set exactly one of exact, regex, present, absent",
            ));
            None
        }
    }
}

fn header_changes(
    raw: Option<&raw::HeaderChanges>,
    path: &str,
    problems: &mut Problems,
) -> Option<HeaderChanges> {
    let Some(raw) = raw else {
        return Some(HeaderChanges::default());
    };
    let mut pairs = |key: &str, pairs: &raw::Pairs| {
        all(pairs.0.iter().map(|(name, raw::Scalar(text))| {
            let header = check(
                problems,
                &format!("{path}.{key}"),
                code::HEADER_NAME,
                quote(name),
                value::header_name(name),
            );
            let value = check(
                problems,
                &format!("{path}.{key}.{name}"),
                code::HEADER_VALUE,
                quote(text),
                value::header_value(text),
            );
            Some((header?, value?))
        }))
    };
    let add = pairs("add", &raw.add);
    let set = pairs("set", &raw.set);
    let remove = all(raw.remove.iter().enumerate().map(|(i, name)| {
        check(
            problems,
            &format!("{path}.remove[{i}]"),
            code::HEADER_NAME,
            quote(name),
            value::header_name(name),
        )
    }));
    Some(HeaderChanges {
        add: add?,
        set: set?,
        remove: remove?,
    })
}
