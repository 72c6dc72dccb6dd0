//! Parsing repository locations (`/path`, `file:///path`, `s3://bucket/prefix`, …).
//!
//! Parsing is separate from building an operator so that every backend, compiled in or not,
//! is recognised: a location for a backend this build lacks gets an error naming the cargo
//! feature to build with, not "unknown scheme".

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The location forms, listed in errors about locations that match none of them.
pub(crate) const SUPPORTED_FORMS: &str = "a local path (/srv/backups/qdrant or ./repo), \
file:///abs/path, s3://bucket/prefix, azblob://container/prefix (feature `azure`), \
gcs://bucket/prefix (feature `gcs`), webdav://host/path or webdav+https://host/path \
(feature `webdav`), sftp://user@host[:port]/path (feature `sftp`)";

/// A parsed repository location. Never holds a password: those are split off into
/// [`ParsedLocation::password`] so that `Debug` and `Display` of this type are always safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// Local filesystem directory.
    Fs { root: PathBuf },
    /// S3 or an S3-compatible server.
    S3 { bucket: String, prefix: String },
    /// Azure Blob Storage.
    Azblob { container: String, prefix: String },
    /// Google Cloud Storage.
    Gcs { bucket: String, prefix: String },
    /// WebDAV server; `endpoint` is `http(s)://host[:port]`.
    Webdav { endpoint: String, root: String, user: Option<String> },
    /// SFTP server.
    Sftp { user: Option<String>, host: String, port: Option<u16>, root: String },
}

/// A location plus the secret part of its URL, if it had one (only WebDAV accepts one).
pub(crate) struct ParsedLocation {
    pub location: Location,
    /// The password from `webdav://user:password@host/…`; never displayed.
    pub password: Option<String>,
    /// The display form: the location as the user wrote it, password replaced by `***`.
    pub display: String,
}

impl fmt::Debug for ParsedLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedLocation")
            .field("location", &self.location)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("display", &self.display)
            .finish()
    }
}

/// Parses `input` into a location. Errors are `InvalidInput` and never echo a password.
pub(crate) fn parse(input: &str) -> Result<ParsedLocation> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid_input(format!(
            "the repository location is empty; use {SUPPORTED_FORMS}"
        )));
    }
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        if let Some(scheme) = mistyped_scheme(trimmed) {
            // `s3:/bucket` would otherwise become a local directory named `s3:`.
            return Err(Error::invalid_input(format!(
                "repository location {scheme}:… is not a valid URL: it is written \
                 {scheme}://…, two slashes after the colon (e.g. {}); for a local \
                 directory whose name has a colon, write ./{scheme}:…",
                example(scheme)
            )));
        }
        // No scheme: a plain local path, absolute or relative.
        return Ok(ParsedLocation {
            location: Location::Fs { root: PathBuf::from(trimmed) },
            password: None,
            display: trimmed.to_string(),
        });
    };
    let scheme_lower = scheme.to_ascii_lowercase();
    match scheme_lower.as_str() {
        "file" => {
            if !rest.starts_with('/') {
                return Err(Error::invalid_input(format!(
                    "repository location {trimmed:?}: a file:// location needs an absolute \
                     path (file:///srv/backups); for a relative path drop the file:// prefix"
                )));
            }
            Ok(ParsedLocation {
                location: Location::Fs { root: PathBuf::from(rest) },
                password: None,
                display: trimmed.to_string(),
            })
        }
        "s3" | "azblob" | "gcs" => {
            let (name, prefix) = split_bucket(scheme, rest)?;
            let location = match scheme_lower.as_str() {
                "s3" => Location::S3 { bucket: name, prefix },
                "azblob" => Location::Azblob { container: name, prefix },
                _ => Location::Gcs { bucket: name, prefix },
            };
            Ok(ParsedLocation { location, password: None, display: trimmed.to_string() })
        }
        "webdav" | "webdav+http" | "webdav+https" => {
            let http_scheme = if scheme_lower == "webdav+https" { "https" } else { "http" };
            let (authority, path) = split_authority(rest);
            let (userinfo, host) = split_userinfo(authority);
            if host.is_empty() {
                return Err(Error::invalid_input(format!(
                    "repository location {}: a WebDAV location needs a host \
                     (webdav://host/path)",
                    crate::redact::url(trimmed)
                )));
            }
            let (user, password) = match userinfo {
                Some(info) => match info.split_once(':') {
                    Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                    None => (Some(info.to_string()), None),
                },
                None => (None, None),
            };
            Ok(ParsedLocation {
                location: Location::Webdav {
                    endpoint: format!("{http_scheme}://{host}"),
                    root: normalize_root(path),
                    user,
                },
                password,
                display: crate::redact::url(trimmed),
            })
        }
        "sftp" => {
            let (authority, path) = split_authority(rest);
            let (userinfo, hostport) = split_userinfo(authority);
            if let Some(info) = userinfo {
                if info.contains(':') {
                    return Err(Error::invalid_input(format!(
                        "repository location {}: passwords in sftp:// locations are not \
                         supported; use an SSH key (ssh-agent or ~/.ssh/config)",
                        crate::redact::url(trimmed)
                    )));
                }
            }
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(port) => (h.to_string(), Some(port)),
                    Err(_) => {
                        return Err(Error::invalid_input(format!(
                            "repository location {trimmed}: {p:?} is not a valid port"
                        )))
                    }
                },
                _ => (hostport.to_string(), None),
            };
            if host.is_empty() {
                return Err(Error::invalid_input(format!(
                    "repository location {trimmed}: an sftp location needs a host \
                     (sftp://user@host[:port]/path)"
                )));
            }
            Ok(ParsedLocation {
                location: Location::Sftp {
                    user: userinfo.map(str::to_string),
                    host,
                    port,
                    root: normalize_root(path),
                },
                password: None,
                display: trimmed.to_string(),
            })
        }
        _ => Err(Error::invalid_input(format!(
            "repository location {}: unknown scheme {scheme:?}; use {SUPPORTED_FORMS}",
            // The part after the scheme could carry credentials: show only the scheme.
            format_args!("{scheme}://…")
        ))),
    }
}

/// Checks `input` as [`parse`] does, without keeping the result: for `config check`, which
/// must refuse exactly what opening the repository refuses.
pub fn check(input: &str) -> Result<()> {
    parse(input).map(|_| ())
}

/// The schemes [`parse`] knows, compiled in or not.
const SCHEMES: &[&str] =
    &["file", "s3", "azblob", "gcs", "webdav", "webdav+http", "webdav+https", "sftp"];

/// The scheme of a location that starts like a URL but lacks the `//`: a known scheme and a
/// colon (`s3:bucket`, `s3:/bucket`), or any scheme-like word and `:/` (`ftp:/x`). One
/// letter before the colon is a Windows drive, not a scheme.
fn mistyped_scheme(input: &str) -> Option<&str> {
    let (scheme, rest) = input.split_once(':')?;
    let scheme_like = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
    let known = SCHEMES.contains(&scheme.to_ascii_lowercase().as_str());
    (scheme_like && (known || rest.starts_with('/'))).then_some(scheme)
}

/// A well-formed location of `scheme`, for error messages.
fn example(scheme: &str) -> &'static str {
    match scheme.to_ascii_lowercase().as_str() {
        "file" => "file:///srv/backups",
        "azblob" => "azblob://container/prefix",
        "gcs" => "gcs://bucket/prefix",
        "sftp" => "sftp://user@host/path",
        s if s.starts_with("webdav") => "webdav://host/path",
        _ => "s3://bucket/prefix",
    }
}

/// `bucket/prefix/more` → (`bucket`, `prefix/more/`), or an error for an empty bucket.
/// The error shows only the scheme: a malformed URL may hold credentials.
fn split_bucket(scheme: &str, rest: &str) -> Result<(String, String)> {
    let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() || name.contains('@') || name.contains(':') {
        return Err(Error::invalid_input(format!(
            "repository location {scheme}://… names no valid bucket or container; use e.g. \
             s3://bucket/prefix (credentials go in options or the environment, not the URL)"
        )));
    }
    Ok((name.to_string(), normalize_root(prefix)))
}

/// `host/path` → (`host`, `/path`).
fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

/// `user:pw@host` → (Some(`user:pw`), `host`).
fn split_userinfo(authority: &str) -> (Option<&str>, &str) {
    match authority.rsplit_once('@') {
        Some((info, host)) => (Some(info), host),
        None => (None, authority),
    }
}

/// OpenDAL roots are `/`-separated, absolute and end with `/`; `""` means the bucket root.
fn normalize_root(path: &str) -> String {
    let inner: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if inner.is_empty() {
        "/".to_string()
    } else {
        format!("/{}/", inner.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn plain_paths_are_fs() {
        for p in ["/srv/repo", "repo", "./repo", "../x/y"] {
            let l = parse(p).unwrap();
            assert_eq!(l.location, Location::Fs { root: PathBuf::from(p) });
            assert_eq!(l.display, p);
        }
        let l = parse("file:///srv/repo").unwrap();
        assert_eq!(l.location, Location::Fs { root: PathBuf::from("/srv/repo") });
        assert_eq!(parse("file://repo").unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn buckets() {
        let l = parse("s3://bucket/a/b").unwrap();
        assert_eq!(l.location, Location::S3 { bucket: "bucket".into(), prefix: "/a/b/".into() });
        let l = parse("s3://bucket").unwrap();
        assert_eq!(l.location, Location::S3 { bucket: "bucket".into(), prefix: "/".into() });
        let l = parse("gcs://b/p/").unwrap();
        assert_eq!(l.location, Location::Gcs { bucket: "b".into(), prefix: "/p/".into() });
        let l = parse("azblob://c/p").unwrap();
        assert_eq!(l.location, Location::Azblob { container: "c".into(), prefix: "/p/".into() });
        assert_eq!(parse("s3:///x").unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(parse("s3://").unwrap_err().kind(), ErrorKind::InvalidInput);
        let e = parse("s3://key:secret@bucket/x").unwrap_err();
        assert!(!e.message().contains("secret"), "{}", e.message());
    }

    #[test]
    fn webdav_redacts_password() {
        let l = parse("webdav+https://bob:hunter2@dav.example/backups").unwrap();
        assert_eq!(
            l.location,
            Location::Webdav {
                endpoint: "https://dav.example".into(),
                root: "/backups/".into(),
                user: Some("bob".into())
            }
        );
        assert_eq!(l.password.as_deref(), Some("hunter2"));
        assert_eq!(l.display, "webdav+https://bob:***@dav.example/backups");
        assert!(!format!("{l:?}").contains("hunter2"));
        let l = parse("webdav://dav.local:8080/x").unwrap();
        assert!(
            matches!(l.location, Location::Webdav { ref endpoint, .. } if endpoint == "http://dav.local:8080")
        );
    }

    #[test]
    fn sftp() {
        let l = parse("sftp://alice@host:2222/srv/repo").unwrap();
        assert_eq!(
            l.location,
            Location::Sftp {
                user: Some("alice".into()),
                host: "host".into(),
                port: Some(2222),
                root: "/srv/repo/".into()
            }
        );
        let l = parse("sftp://host/srv").unwrap();
        assert!(
            matches!(l.location, Location::Sftp { port: None, ref host, .. } if host == "host")
        );
        let e = parse("sftp://alice:pw@host/srv").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(!e.message().contains(":pw@"));
        assert_eq!(parse("sftp://host:notaport/x").unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn a_url_missing_its_slashes_is_refused_not_taken_for_a_directory() {
        for input in ["s3:/bucket", "s3:bucket/x", "S3:/b", "gcs:/b", "file:/srv", "ftp:/x"] {
            let e = parse(input).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{input}");
            assert!(e.message().contains("two slashes after the colon"), "{}", e.message());
        }
        let e = parse("s3:/bucket").unwrap_err();
        assert!(e.message().contains("s3://bucket/prefix"), "{}", e.message());
        // A drive letter and a colon deeper in a relative path stay paths.
        for p in ["C:/repo", "./s3:/bucket", "backups/2024:01"] {
            assert_eq!(parse(p).unwrap().location, Location::Fs { root: PathBuf::from(p) });
        }
    }

    #[test]
    fn unknown_scheme_lists_forms() {
        let e = parse("ftp://user:secret@host/x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("s3://bucket/prefix"));
        assert!(!e.message().contains("secret"));
    }
}
