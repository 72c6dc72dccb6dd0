//! The types a setting can have, and checking a value (from the file or the environment)
//! against one. A value that passes is one the command will accept: durations, groupings,
//! time zones and URLs are parsed here exactly as the commands parse them.

use qvault::retention::{GroupBy, RetentionDuration};

/// A setting's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A repository location: a path or a URL with a known scheme.
    Location,
    /// A file that must exist (`config check` looks).
    File,
    /// A file or directory qvault creates.
    Path,
    /// An http(s) URL.
    Url,
    /// One http(s) URL or an array of them.
    Urls,
    Text,
    /// Text that never reaches a log line or an error.
    Secret,
    Bool,
    /// A whole number, 0 or more.
    Count,
    /// `7d`, `1y2m`, `26h` (as the keep-within flags).
    Duration,
    /// `30min`, `26h`, `7d`: a bare `m` is refused (an RTO, a maximum age).
    ShortDuration,
    /// Grouping fields, comma-separated: source, host, name, tags, streams.
    Fields,
    /// An IANA time zone, UTC or local.
    Zone,
    /// A percentage: a number or `"20%"`.
    Percent,
    /// A string or an array of strings.
    Strings,
    /// An array of strings.
    StringArray,
    /// A table of per-group retention policies.
    GroupPolicies,
}

/// A checked value.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    Text(String),
    Bool(bool),
    Count(u32),
    Number(f64),
    List(Vec<String>),
    /// Per-group policies (`forget.groups`): read by forget from the raw table.
    Table,
}

impl Value {
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// A list, or a one-element list of a text.
    pub fn list(&self) -> Vec<String> {
        match self {
            Value::List(l) => l.clone(),
            Value::Text(t) => vec![t.clone()],
            _ => Vec::new(),
        }
    }
}

impl Kind {
    /// The type as the reference names it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Location => "location",
            Kind::File => "path (existing file)",
            Kind::Path => "path",
            Kind::Url => "URL",
            Kind::Urls => "URL or array of URLs",
            Kind::Text => "string",
            Kind::Secret => "string (secret)",
            Kind::Bool => "boolean",
            Kind::Count => "integer ≥ 0",
            Kind::Duration => "duration (7d, 1y2m, 26h)",
            Kind::ShortDuration => "duration (30min, 26h, 7d)",
            Kind::Fields => "grouping (source,name,streams)",
            Kind::Zone => "time zone",
            Kind::Percent => "percent (20 or \"20%\")",
            Kind::Strings => "string or array of strings",
            Kind::StringArray => "array of strings",
            Kind::GroupPolicies => "table of policies",
        }
    }

    /// Checks a value from the file.
    pub fn check(self, value: &toml::Value) -> Result<Value, String> {
        let wrong = || format!("must be {}, not {}", a(self.name()), value.type_str());
        match (self, value) {
            (Kind::Bool, toml::Value::Boolean(b)) => Ok(Value::Bool(*b)),
            (Kind::Count, toml::Value::Integer(n)) => u32::try_from(*n)
                .map(Value::Count)
                .map_err(|_| format!("must be a whole number from 0 to {}, not {n}", u32::MAX)),
            (Kind::Percent, toml::Value::Integer(n)) => percent(&n.to_string()),
            (Kind::Percent, toml::Value::Float(n)) => percent(&n.to_string()),
            (Kind::Strings | Kind::StringArray | Kind::Urls, toml::Value::Array(items)) => {
                let mut list = Vec::new();
                for item in items {
                    let toml::Value::String(s) = item else {
                        return Err(format!("must hold strings, not {}", item.type_str()));
                    };
                    list.push(self.check_text(s)?.text().unwrap_or_default().to_string());
                }
                Ok(Value::List(list))
            }
            (Kind::GroupPolicies, toml::Value::Table(_)) => Ok(Value::Table),
            (Kind::Bool | Kind::Count | Kind::GroupPolicies | Kind::StringArray, _) => Err(wrong()),
            (_, toml::Value::String(s)) => self.check_text(s),
            _ => Err(wrong()),
        }
    }

    /// Checks a value from the environment (always text): `true`/`false` for switches,
    /// commas between the items of a list.
    pub fn check_env(self, text: &str) -> Result<Value, String> {
        match self {
            Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => Ok(Value::Bool(true)),
                "0" | "false" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("{text:?} is not true or false")),
            },
            Kind::Count => text
                .trim()
                .parse()
                .map(Value::Count)
                .map_err(|_| format!("{text:?} is not a whole number")),
            Kind::Strings | Kind::StringArray | Kind::Urls => {
                let items = text.split(',').map(str::trim).filter(|s| !s.is_empty());
                let list: Result<Vec<String>, String> =
                    items.map(|s| self.check_text(s).map(|_| s.to_string())).collect();
                Ok(Value::List(list?))
            }
            _ => self.check_text(text),
        }
    }

    /// Checks a text value against what the type accepts.
    fn check_text(self, s: &str) -> Result<Value, String> {
        let ok = || Ok(Value::Text(s.to_string()));
        match self {
            Kind::Location => location(s).and_then(|()| ok()),
            Kind::File | Kind::Path if s.is_empty() => Err("must not be empty".into()),
            Kind::Url | Kind::Urls => url(s).and_then(|()| ok()),
            Kind::Duration => match s.parse::<RetentionDuration>() {
                Ok(_) => ok(),
                Err(e) => Err(e.message().to_string()),
            },
            Kind::ShortDuration => match RetentionDuration::parse_short(s) {
                Ok(_) => ok(),
                Err(e) => Err(e.message().to_string()),
            },
            Kind::Fields => match s.parse::<GroupBy>() {
                Ok(_) => ok(),
                Err(e) => Err(e.message().to_string()),
            },
            Kind::Zone => match qvault::retention::parse_time_zone(s) {
                Ok(_) => ok(),
                Err(e) => Err(e.message().to_string()),
            },
            Kind::Percent => percent(s),
            Kind::Bool | Kind::Count | Kind::GroupPolicies | Kind::StringArray => {
                Err(format!("must be {}, not a string", a(self.name())))
            }
            _ => ok(),
        }
    }
}

fn a(name: &str) -> String {
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u', 'U']) { "an" } else { "a" };
    format!("{article} {name}")
}

fn percent(s: &str) -> Result<Value, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(Value::Number(n)),
        _ => Err(format!("{s:?} is not a percentage of 0 or more (e.g. 20 or \"20%\")")),
    }
}

fn url(s: &str) -> Result<(), String> {
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "{} is not an http(s) URL with a host (scheme {:?})",
            qvault::redact::url(s),
            u.scheme()
        )),
        Err(e) => Err(format!("{} is not a URL: {e}", qvault::redact::url(s))),
    }
}

/// A location as opening the repository parses it (one parser, so `config check` passes
/// exactly what a command accepts); only the backend's credentials are left to that moment.
fn location(s: &str) -> Result<(), String> {
    qvault::storage::check_location(s).map_err(|e| e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_as_the_commands_parse_them() {
        let s = |t: &str| toml::Value::String(t.into());
        assert_eq!(Kind::Duration.check(&s("7d")), Ok(Value::Text("7d".into())));
        assert!(Kind::Duration.check(&s("7 days please")).is_err());
        assert!(Kind::Fields.check(&s("source,colour")).is_err());
        assert!(Kind::Zone.check(&s("Mars/Olympus")).is_err());
        assert!(Kind::Url.check(&s("ftp://x")).is_err());
        assert!(Kind::Location.check(&s("ftp://x/y")).is_err());
        assert_eq!(Kind::Location.check(&s("/srv/repo")), Ok(Value::Text("/srv/repo".into())));
        for malformed in ["s3:/bucket", "s3://", "file://relative"] {
            assert!(Kind::Location.check(&s(malformed)).is_err(), "{malformed}");
        }
        assert_eq!(Kind::Count.check(&toml::Value::Integer(-1)).map_err(|_| ()), Err(()));
        assert_eq!(Kind::Percent.check(&s("20%")), Ok(Value::Number(20.0)));
        assert_eq!(Kind::Bool.check(&s("yes")), Err("must be a boolean, not string".to_string()));
        assert_eq!(
            Kind::Urls.check_env("http://a:6333, http://b:6333"),
            Ok(Value::List(vec!["http://a:6333".into(), "http://b:6333".into()]))
        );
        assert_eq!(Kind::Bool.check_env("true"), Ok(Value::Bool(true)));
    }
}
