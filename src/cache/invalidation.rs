//! Which resources a write invalidates (RFC 9111 §4.4).
//!
//! Besides the target URI, a cache may invalidate the URIs in `Location`
//! and `Content-Location`, and must not when their origin differs. Those are
//! URI references, resolved against the target (RFC 3986 §5.2). Only the
//! path and query matter here (generations are kept per path and query), so
//! this resolves just those, with dot segments removed; a full URL crate
//! would bring IDNA tables and more for an answer that is a path.

/// The path and query that a `Location` or `Content-Location` value names,
/// if it names a URI of the request's own authority.
///
/// `target` is the request's path (and query); `authority` the request's
/// (from its URI or `Host`), if known.
pub(crate) fn same_authority_path(
    reference: &[u8],
    target: &str,
    authority: Option<&[u8]>,
) -> Option<String> {
    let reference = std::str::from_utf8(reference).ok()?.trim();
    // The fragment is not part of what is requested.
    let reference = reference.split('#').next().unwrap_or_default();
    if reference.is_empty() {
        // The target itself, already invalidated.
        return None;
    }
    let (relative, has_authority) = relative_part(reference, authority)?;
    let (path, query) = match relative.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (relative, None),
    };
    let base = target.split('?').next().unwrap_or("/");
    let path = resolve_path(path, base, has_authority);
    Some(match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    })
}

/// The reference without its scheme and authority, and whether it had an
/// authority; `None` when it names another origin.
fn relative_part<'a>(reference: &'a str, authority: Option<&[u8]>) -> Option<(&'a str, bool)> {
    if let Some(rest) = strip_scheme(reference) {
        // An absolute URI: only `scheme://authority…` can name this origin.
        let rest = rest.strip_prefix("//")?;
        Some((same_authority(rest, authority)?, true))
    } else if let Some(rest) = reference.strip_prefix("//") {
        // A network-path reference.
        Some((same_authority(rest, authority)?, true))
    } else {
        Some((reference, false))
    }
}

/// RFC 3986 §5.2.2: the path of a reference resolved against the target's
/// path `base`.
fn resolve_path(path: &str, base: &str, has_authority: bool) -> String {
    let resolved = match path {
        // `http://example.com` and `http://example.com?q`: the root.
        "" if has_authority => return "/".to_owned(),
        // `?q`: the base path with another query.
        "" => base.to_owned(),
        path if path.starts_with('/') => remove_dot_segments(path),
        // RFC 3986 §5.2.3: merge with the base's directory.
        path => {
            let directory = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            remove_dot_segments(&format!("{directory}{path}"))
        }
    };
    // Dot segments may remove everything: the root.
    if resolved.is_empty() {
        "/".to_owned()
    } else {
        resolved
    }
}

/// `scheme:` per RFC 3986 §3.1, stripped; `None` when there is none.
fn strip_scheme(reference: &str) -> Option<&str> {
    let colon = reference.find(':')?;
    let scheme = &reference[..colon];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| &reference[colon + 1..])
}

/// The rest of `authority-and-path` after its authority, if that authority
/// is the request's (compared case-insensitively, RFC 3986 §6.2.2.1).
fn same_authority<'a>(rest: &'a str, authority: Option<&[u8]>) -> Option<&'a str> {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (theirs, path) = rest.split_at(end);
    authority
        .is_some_and(|ours| ours.eq_ignore_ascii_case(theirs.as_bytes()))
        .then_some(path)
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    output.push("");
                }
            }
            ".." => {
                if output.len() > 1 {
                    output.pop();
                }
                if i == last {
                    output.push("");
                }
            }
            segment => output.push(segment),
        }
    }
    output.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(reference: &str, target: &str) -> Option<String> {
        same_authority_path(reference.as_bytes(), target, Some(b"example.com"))
    }

    #[test]
    fn references_resolve_against_the_target() {
        // RFC 3986 §5.4.1's base is http://a/b/c/d;p?q; these are its forms.
        let base = "/b/c/d;p?q";
        for (reference, expected) in [
            ("g", "/b/c/g"),
            ("./g", "/b/c/g"),
            ("g/", "/b/c/g/"),
            ("/g", "/g"),
            ("?y", "/b/c/d;p?y"),
            ("g?y", "/b/c/g?y"),
            ("g#s", "/b/c/g"),
            (".", "/b/c/"),
            ("./", "/b/c/"),
            ("..", "/b/"),
            ("../", "/b/"),
            ("../g", "/b/g"),
            ("../..", "/"),
            ("../../g", "/g"),
            ("../../../g", "/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
        ] {
            assert_eq!(
                resolve(reference, base).as_deref(),
                Some(expected),
                "{reference}"
            );
        }
    }

    #[test]
    fn only_the_same_authority_is_invalidated() {
        let target = "/notes";
        assert_eq!(
            resolve("http://example.com/notes/1", target).as_deref(),
            Some("/notes/1")
        );
        assert_eq!(resolve("https://EXAMPLE.com", target).as_deref(), Some("/"));
        assert_eq!(
            resolve("//example.com/a?b", target).as_deref(),
            Some("/a?b")
        );
        assert_eq!(resolve("http://other.example/notes/1", target), None);
        assert_eq!(resolve("//example.com:8080/a", target), None);
        assert_eq!(resolve("mailto:a@example.com", target), None);
        assert_eq!(resolve("", target), None);
        assert_eq!(
            same_authority_path(b"http://example.com/a", target, None),
            None,
            "no authority to compare with"
        );
        assert_eq!(
            same_authority_path(b"/\xff", target, None),
            None,
            "not UTF-8"
        );
    }
}
