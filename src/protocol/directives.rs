//! Directive lists of `Cache-Control` and `Pragma` (RFC 9111 §5.2, §5.4):
//! comma-separated, each a name with an optional `=argument`, names
//! compared case-insensitively.

use http::HeaderValue;

/// Whether `value` holds a directive named one of `names` (in lowercase),
/// with or without an argument.
pub(crate) fn has_directive(value: &HeaderValue, names: &[&str]) -> bool {
    value.as_bytes().split(|&b| b == b',').any(|directive| {
        let name = directive.split(|&b| b == b'=').next().unwrap_or_default();
        let name = name.trim_ascii();
        names
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(value: &str, names: &[&str]) -> bool {
        has_directive(&HeaderValue::from_str(value).unwrap(), names)
    }

    #[test]
    fn directives_are_found_in_lists_in_any_case_with_arguments() {
        assert!(has("no-cache", &["no-cache"]));
        assert!(has("max-age=0, No-Cache", &["no-cache"]));
        assert!(has("no-cache=\"set-cookie\"", &["no-cache"]));
        assert!(has(" no-store ", &["no-store"]));
        assert!(has("max-age=0, Private", &["no-store", "private"]));
        assert!(!has("no-store", &["no-cache"]));
        assert!(!has("max-age=0", &["no-cache"]));
        assert!(!has("no-cache-please", &["no-cache"]));
    }
}
