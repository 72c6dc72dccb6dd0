//! A config file read into checked settings: the top level and each `[profiles.NAME]`.
//! Every problem (a syntax error, an unknown key, a value of the wrong type or that does not
//! parse) is collected with its line and column, not just the first.

use super::settings::{self, Setting};
use super::value::{Kind, Value};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Where a problem, or a value, is in the file (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct At {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub at: At,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// One value and where the file set it.
#[derive(Clone)]
pub struct Found {
    pub setting: &'static Setting,
    pub value: Value,
    pub at: At,
}

/// Names the setting and its place, never the value: it may be a secret.
impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.setting.key, self.at)
    }
}

/// The settings of the top level or of one profile.
#[derive(Clone, Debug, Default)]
pub struct Level {
    pub values: BTreeMap<&'static str, Found>,
    /// The `[forget]` table as written, for the retention policy (read as a whole).
    pub forget: Option<toml::Table>,
}

#[derive(Clone, Debug, Default)]
pub struct Document {
    pub top: Level,
    pub profiles: BTreeMap<String, Level>,
}

/// Reads `text`; the document holds every value that passed, the problems every one that
/// did not.
pub fn parse(text: &str) -> (Document, Vec<Problem>) {
    let mut reader = Reader { text, problems: Vec::new(), profile: None };
    let mut doc = Document::default();
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let at = reader.at(e.span().map_or(0, |s| s.start));
            reader.problems.push(Problem { at, message: e.message().trim().to_string() });
            return (doc, reader.problems);
        }
    };
    for (key, value) in root.get_ref().iter() {
        if key.get_ref() == "profiles" {
            let Some(profiles) = value.get_ref().as_table() else {
                reader.problem(value.span(), "profiles must be a table: [profiles.NAME]");
                continue;
            };
            for (name, profile) in profiles.iter() {
                let Some(table) = profile.get_ref().as_table() else {
                    let why = format!("profile {:?} must be a table", name.get_ref());
                    reader.problem(profile.span(), &why);
                    continue;
                };
                let level = doc.profiles.entry(name.get_ref().to_string()).or_default();
                reader.profile = Some(name.get_ref().to_string());
                for (k, v) in table.iter() {
                    reader.entry(k, v, "", level);
                }
                reader.profile = None;
            }
        } else {
            reader.entry(key, value, "", &mut doc.top);
        }
    }
    reader.problems.sort_by_key(|p| (p.at.line, p.at.column));
    (doc, reader.problems)
}

struct Reader<'t> {
    text: &'t str,
    problems: Vec<Problem>,
    /// The profile being read: its problems name it, as the same key may be valid at the
    /// top level.
    profile: Option<String>,
}

impl Reader<'_> {
    /// Line and column (in characters) of a byte offset.
    fn at(&self, offset: usize) -> At {
        let before = self.text.get(..offset.min(self.text.len())).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
        At { line, column }
    }

    fn problem(&mut self, span: Range<usize>, message: &str) {
        let at = self.at(span.start);
        let message = match &self.profile {
            Some(profile) => format!("{message} (in [profiles.{profile}])"),
            None => message.to_string(),
        };
        self.problems.push(Problem { at, message });
    }

    /// One key of a table at `prefix` (empty at the top level).
    fn entry(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
        prefix: &str,
        level: &mut Level,
    ) {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let Some(setting) = settings::find(&name) {
            let plain = plain(value.get_ref());
            match setting.kind.check(&plain) {
                Ok(checked) => {
                    if setting.kind == Kind::GroupPolicies {
                        self.group_policies(value);
                    }
                    let at = self.at(value.span().start);
                    level.values.insert(setting.key, Found { setting, value: checked, at });
                }
                Err(why) => self.problem(value.span(), &format!("{name} {why}")),
            }
        } else if settings::is_section(&name) {
            let Some(table) = value.get_ref().as_table() else {
                self.problem(value.span(), &format!("{name} must be a table: [{name}]"));
                return;
            };
            for (k, v) in table.iter() {
                self.entry(k, v, &name, level);
            }
            if name == "forget" {
                if let toml::Value::Table(t) = plain(value.get_ref()) {
                    level.forget = Some(t);
                }
            }
        } else {
            let message = match suggestion(&name) {
                Some(near) => format!("unknown key {name:?} (did you mean {near:?}?)"),
                None => format!("unknown key {name:?}; docs/configuration.md lists the keys"),
            };
            self.problem(key.span(), &message);
        }
    }

    /// `[forget.groups."<group>"]`: each a table of `keep-*` rules.
    fn group_policies(&mut self, value: &Spanned<DeValue<'_>>) {
        let Some(groups) = value.get_ref().as_table() else { return };
        for (group, policy) in groups.iter() {
            let Some(rules) = policy.get_ref().as_table() else {
                let why =
                    format!("forget.groups.{:?} must be a table of keep-* rules", group.get_ref());
                self.problem(policy.span(), &why);
                continue;
            };
            for (rule, v) in rules.iter() {
                let Some(setting) = settings::group_policy_rule(rule.get_ref()) else {
                    let why = format!(
                        "unknown key {:?} in the policy of group {:?}: a group policy holds \
                         forget.keep-* rules",
                        rule.get_ref(),
                        group.get_ref()
                    );
                    self.problem(rule.span(), &why);
                    continue;
                };
                if let Err(why) = setting.kind.check(&plain(v.get_ref())) {
                    self.problem(v.span(), &format!("{} {why}", rule.get_ref()));
                }
            }
        }
    }
}

/// The value without spans.
fn plain(value: &DeValue<'_>) -> toml::Value {
    match value {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(n.as_str().to_string())),
        DeValue::Float(f) => {
            toml::Value::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN))
        }
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(items) => {
            toml::Value::Array(items.into_iter().map(|v| plain(v.get_ref())).collect())
        }
        DeValue::Table(t) => toml::Value::Table(
            t.iter().map(|(k, v)| (k.get_ref().to_string(), plain(v.get_ref()))).collect(),
        ),
    }
}

/// The known key closest to a misspelt one, when it is close.
fn suggestion(key: &str) -> Option<&'static str> {
    settings::SETTINGS
        .iter()
        .map(|s| (distance(key, s.key), s.key))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb)).min(row[j] + 1).min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_line_and_column() {
        let text = "repository = \"/srv/repo\"\nrepositry = \"x\"\n[s3]\nregion = 5\n\
                    [profiles.prod]\nmax_age = \"a week\"\n[forget]\nkeep-lats = 1\n";
        let (doc, problems) = parse(text);
        let found: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(
            found[0],
            "line 2, column 1: unknown key \"repositry\" (did you mean \"repository\"?)"
        );
        assert_eq!(found[1], "line 4, column 10: s3.region must be a string, not integer");
        assert!(found[2].starts_with("line 6, column 11: max_age "), "{found:?}");
        assert_eq!(
            found[3],
            "line 8, column 1: unknown key \"forget.keep-lats\" (did you mean \"forget.keep-last\"?)"
        );
        assert_eq!(doc.top.values["repository"].value, Value::Text("/srv/repo".into()));
        assert!(doc.profiles.contains_key("prod"));
    }

    #[test]
    fn a_syntax_error_names_its_place() {
        let (_, problems) = parse("repository = \"/x\"\nidentity = \n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].at.line, 2, "{problems:?}");
    }
}
