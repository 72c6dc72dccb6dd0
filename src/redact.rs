//! Secrets out of what qvault shows: URLs in messages, logs and `Debug` output; and control
//! characters out of names from a backed-up tree shown on a terminal.
//!
//! Guarantee of [`printable`]: what it returns holds no control character and no
//! bidirectional override, so a file name cannot forge a line or colour a terminal.
//!
//! Guarantees of [`url`]: the password of a URL's userinfo and the value of every
//! secret-looking query parameter ([`secret_param`]) are replaced by [`MASK`]; everything
//! else stays byte for byte as written (no re-encoding, no normalising), so a shown
//! repository location or Qdrant URL reads as the user typed it.

/// What stands in for a secret wherever one is withheld from a URL or a message.
pub const MASK: &str = "***";

/// `s` with the userinfo password and secret query values replaced by [`MASK`].
///
/// Works on the text, not on a parsed URL: it also serves locations no URL parser accepts
/// (`webdav+https://…`, a Qdrant URL with a typo) and never echoes a parse error's input.
pub fn url(s: &str) -> String {
    let (scheme, rest) = match s.find("://") {
        Some(i) => s.split_at(i + 3),
        None => ("", s),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(s.len());
    out.push_str(scheme);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }

    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if secret_param(name) => format!("{name}={MASK}"),
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    out
}

/// Whether a query parameter's value is treated as a secret (`api_key`, `token`,
/// `X-Amz-Signature`, …): better one harmless value hidden than one key shown.
pub fn secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["key", "token", "secret", "password", "signature", "sig", "credential"]
        .iter()
        .any(|s| n.contains(s))
}

/// `message` with every occurrence of `secret` replaced by [`MASK`], whatever echoed it
/// (a server's error text, a proxy's page).
pub fn scrub(message: String, secret: Option<&str>) -> String {
    match secret {
        Some(k) if !k.is_empty() && message.contains(k) => message.replace(k, MASK),
        _ => message,
    }
}

/// `s` as a terminal may show it: control characters (a newline, ESC) and Unicode's
/// bidirectional controls become Rust escapes (`\n`, `\u{1b}`); everything else stays as is.
/// For names qvault did not choose (paths of a backed-up tree); JSON escapes on its own.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_and_bidi_characters_and_keeps_the_rest() {
        assert_eq!(printable("a b/é.txt"), "a b/é.txt");
        assert_eq!(
            printable("a\n  and 0 more\nstream   fake (File)\u{1b}[31mRED"),
            "a\\n  and 0 more\\nstream   fake (File)\\u{1b}[31mRED"
        );
        assert_eq!(printable("x\ty\r\u{7f}\u{202e}z"), "x\\ty\\r\\u{7f}\\u{202e}z");
        assert!(!printable("\u{85}\u{2066}").chars().any(|c| c.is_control() || c == '\u{2066}'));
    }

    #[test]
    fn passwords_and_secret_params_are_masked_and_nothing_else_changes() {
        assert_eq!(
            url("https://user:hunter2@q.example:6333/x?token=abc&wait=true#f"),
            "https://user:***@q.example:6333/x?token=***&wait=true#f"
        );
        assert_eq!(
            url("webdav+https://bob:hunter2@dav.example/backups"),
            "webdav+https://bob:***@dav.example/backups"
        );
        assert_eq!(url("sftp://alice@host:2222/srv"), "sftp://alice@host:2222/srv");
        assert_eq!(url("http://h/a%20b?x=1&api-key=k"), "http://h/a%20b?x=1&api-key=***");
        assert_eq!(url("user:pw@host"), "user:***@host");
        assert_eq!(url("/srv/repo"), "/srv/repo");
    }

    #[test]
    fn scrub_masks_every_occurrence() {
        assert_eq!(scrub("k1 and k1".into(), Some("k1")), "*** and ***");
        assert_eq!(scrub("k1".into(), Some("")), "k1");
        assert_eq!(scrub("k1".into(), None), "k1");
    }
}
