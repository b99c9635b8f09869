//! What is wrong with a config: one [`Problem`] per broken rule, all of them in [`Problems`].

use std::fmt;

/// One broken rule: where, which value, which rule, and how to fix it.
///
/// Displays as `path (code): rule, got value; hint`, for example
/// `clusters[0].connect_timeout (E0307): must be greater than 0, got "0s"; example: "250ms"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    path: String,
    code: &'static str,
    value: String,
    rule: String,
    hint: Option<String>,
}

impl Problem {
    /// A problem at `path`; `value` is already rendered as written (see [`Problem::value`]).
    pub(crate) fn new(
        path: impl Into<String>,
        code: &'static str,
        value: impl Into<String>,
        rule: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            code,
            value: value.into(),
            rule: rule.into(),
            hint: None,
        }
    }

    /// Adds how to fix it.
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Where: the field path from the top of the file, such as `listeners[0].address`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The stable code of the rule, such as `E0203`; `docs/config.md` lists them all.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The offending value as written: strings quoted and escaped (`"5x"`), numbers bare (`0`),
    /// an empty list as `[]`, the keys of a map as `{ prefix, path }`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The rule the value breaks, such as `must be greater than 0`.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// How to fix it, when there is more to say than the rule: valid values, an example, or
    /// the place that already uses a unique value.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}, got {}",
            self.path, self.code, self.rule, self.value
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a config, in file order. Never empty when returned in an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// The problems, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    /// `1 problem` or `N problems`.
    pub(crate) fn count_text(&self) -> String {
        match self.0.len() {
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        }
    }
}

impl fmt::Display for Problems {
    /// A `N problem(s)` line, then one two-space-indented line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.count_text())?;
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Renders a string value as the file would write it: quoted, with control characters escaped.
pub(crate) fn quote(value: &str) -> String {
    format!("\"{}\"", value.escape_debug())
}

/// Renders a list of names as `"a", "b"`.
pub(crate) fn quote_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(quote).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_path_code_rule_value_and_hint() {
        let problem = Problem::new(
            "clusters[0].connect_timeout",
            "E0307",
            quote("0s"),
            "must be greater than 0",
        )
        .with_hint("example: \"250ms\"");
        assert_eq!(
            problem.to_string(),
            "clusters[0].connect_timeout (E0307): must be greater than 0, got \"0s\"; example: \"250ms\""
        );
    }

    #[test]
    fn lists_problems_under_a_count() {
        let mut problems = Problems::default();
        problems.push(Problem::new("a", "E0001", "1", "must be 2"));
        assert_eq!(
            problems.to_string(),
            "1 problem\n  a (E0001): must be 2, got 1"
        );
        problems.push(Problem::new("b", "E0001", "[]", "must not be empty"));
        assert_eq!(
            problems.to_string(),
            "2 problems\n  a (E0001): must be 2, got 1\n  b (E0001): must not be empty, got []"
        );
    }

    #[test]
    fn quotes_and_escapes_values() {
        assert_eq!(quote("a\"b\n"), r#""a\"b\n""#);
        assert_eq!(quote_list(["x", "y"]), r#""x", "y""#);
    }
}
