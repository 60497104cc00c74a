//! Evaluating the request preconditions of RFC 9110 §13.1 in the order of
//! §13.2.2, as a pure function of the request's conditional header fields and
//! the response's validators.

use std::time::SystemTime;

use http::{header, HeaderMap, HeaderValue, Method};

use super::entity_tag::{list_matches, Comparison, TagRef};

/// The conditional header fields of a request, read before the request is
/// handed to the inner service.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    /// Every `If-Match` line; empty when absent.
    if_match: Vec<HeaderValue>,
    /// Every `If-None-Match` line; empty when absent.
    if_none_match: Vec<HeaderValue>,
    /// `If-Modified-Since`, when it is a single valid HTTP-date.
    if_modified_since: Option<SystemTime>,
    /// `If-Unmodified-Since`, when it is a single valid HTTP-date.
    if_unmodified_since: Option<SystemTime>,
}

/// The validators of the selected representation (RFC 9110 §8.8).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Validators<'a> {
    /// Whether the resource has a current representation at all. The layer
    /// only evaluates responses that have one; a handler about to create a
    /// resource evaluates against one that does not.
    pub(crate) exists: bool,
    /// The current entity tag, if the response has a valid one.
    pub(crate) etag: Option<TagRef<'a>>,
    /// The current `Last-Modified` date, if the response has a valid one.
    pub(crate) last_modified: Option<SystemTime>,
}

impl<'a> Validators<'a> {
    /// The validators of a representation that exists.
    pub(crate) fn current(etag: Option<TagRef<'a>>, last_modified: Option<SystemTime>) -> Self {
        Self {
            exists: true,
            etag,
            last_modified,
        }
    }

    /// A resource with no current representation (RFC 9110 §13.1.1,
    /// §13.1.2: `If-Match` is then false, `If-None-Match: *` true).
    pub(crate) fn missing() -> Self {
        Self {
            exists: false,
            etag: None,
            last_modified: None,
        }
    }
}

/// What the preconditions decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// All preconditions hold (or none applies): send the response as it is.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

impl Conditions {
    /// Reads the four conditional fields. Values are kept raw (entity-tag
    /// lists) or parsed up front (dates); nothing here can fail.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        // One pass over the request's fields rather than a hashed lookup per
        // name: most requests carry none of the four.
        let mut conditions = Self::default();
        let (mut modified_since, mut unmodified_since) = (Dates::None, Dates::None);
        for (name, value) in headers {
            match *name {
                header::IF_MATCH => conditions.if_match.push(value.clone()),
                header::IF_NONE_MATCH => conditions.if_none_match.push(value.clone()),
                header::IF_MODIFIED_SINCE => modified_since.push(value),
                header::IF_UNMODIFIED_SINCE => unmodified_since.push(value),
                _ => {}
            }
        }
        conditions.if_modified_since = modified_since.single();
        conditions.if_unmodified_since = unmodified_since.single();
        conditions
    }

    /// Whether the request carries a precondition that guards a write
    /// against a lost update: `If-Match`, or a valid `If-Unmodified-Since`.
    pub(crate) fn guards_writes(&self) -> bool {
        !self.if_match.is_empty() || self.if_unmodified_since.is_some()
    }

    /// Whether the request carries any precondition this module evaluates.
    /// Whether the request has `If-None-Match`: most such requests are
    /// answered 304.
    pub(crate) fn has_if_none_match(&self) -> bool {
        !self.if_none_match.is_empty()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.if_match.is_empty()
            && self.if_none_match.is_empty()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }

    /// Evaluates the preconditions against the current validators, in the
    /// order of RFC 9110 §13.2.2.
    ///
    /// The caller asks only when the response would otherwise be 2xx
    /// (RFC 9110 §13.2.1: preconditions are ignored otherwise). Range
    /// handling (step 5, `If-Range`) is out of scope: responses to ranges are
    /// not evaluated by this crate.
    pub(crate) fn evaluate(&self, method: &Method, current: &Validators<'_>) -> Verdict {
        let get_or_head = method == Method::GET || method == Method::HEAD;

        // Step 1. RFC 9110 §13.1.1: If-Match uses the strong comparison, and
        // is false, even `*`, when there is no current representation. An
        // invalid field is ignored on GET and HEAD; on any other method it
        // fails: a client that meant a conditional write must never get a
        // blind one.
        if !self.if_match.is_empty() {
            let holds = if current.exists {
                list_matches(&self.if_match, current.etag, Comparison::Strong)
            } else {
                Some(false)
            };
            let fails = match holds {
                Some(holds) => !holds,
                None => !get_or_head,
            };
            if fails {
                return Verdict::PreconditionFailed;
            }
        }
        // Step 2. RFC 9110 §13.1.4: ignored when the request contains
        // If-Match, when the date is invalid, and when the resource has no
        // modification date.
        else if let (Some(since), Some(modified)) =
            (self.if_unmodified_since, current.last_modified)
        {
            if modified > since {
                return Verdict::PreconditionFailed;
            }
        }

        // Step 3. RFC 9110 §13.1.2: If-None-Match uses the weak comparison;
        // without a current representation nothing matches, not even `*`
        // (so `If-None-Match: *` on a PUT creates only if absent).
        if !self.if_none_match.is_empty() && current.exists {
            if list_matches(&self.if_none_match, current.etag, Comparison::Weak) == Some(true) {
                return if get_or_head {
                    Verdict::NotModified
                } else {
                    Verdict::PreconditionFailed
                };
            }
        }
        // Step 4. RFC 9110 §13.1.3: If-Modified-Since is ignored when the
        // request contains If-None-Match (even an invalid one), for methods
        // other than GET and HEAD, for invalid dates, and when the resource
        // has no modification date.
        else if get_or_head {
            if let (Some(since), Some(modified)) = (self.if_modified_since, current.last_modified) {
                if modified <= since {
                    return Verdict::NotModified;
                }
            }
        }

        Verdict::Proceed
    }
}

/// Parses an HTTP-date (RFC 9110 §5.6.7) in any of its three forms:
/// IMF-fixdate, the obsolete RFC 850 form and asctime.
pub(crate) fn parse_date(value: &HeaderValue) -> Option<SystemTime> {
    // httpdate implements all three forms and validates the result (weekday
    // included); a non-ASCII value cannot be a date.
    httpdate::parse_http_date(value.to_str().ok()?.trim_matches([' ', '\t'])).ok()
}

/// A date field that must occur once (RFC 9110 §13.1.3, §13.1.4: a field
/// value with more than one member is invalid).
enum Dates<'a> {
    None,
    One(&'a HeaderValue),
    Several,
}

impl<'a> Dates<'a> {
    fn push(&mut self, value: &'a HeaderValue) {
        *self = match self {
            Dates::None => Dates::One(value),
            _ => Dates::Several,
        };
    }

    fn single(self) -> Option<SystemTime> {
        match self {
            Dates::One(value) => parse_date(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use Verdict::*;

    const TAG: &str = r#""abc""#;
    // Sun, 06 Nov 1994 08:49:37 GMT
    const LAST_MODIFIED: u64 = 784_111_777;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn conditions(fields: &[(&str, &str)]) -> Conditions {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Conditions::from_headers(&headers)
    }

    fn eval_with(method: Method, fields: &[(&str, &str)], etag: Option<&str>, lm: bool) -> Verdict {
        let validators = Validators::current(
            etag.map(|t| TagRef::parse(t.as_bytes()).unwrap()),
            lm.then(|| at(LAST_MODIFIED)),
        );
        conditions(fields).evaluate(&method, &validators)
    }

    fn eval(fields: &[(&str, &str)]) -> Verdict {
        eval_with(Method::GET, fields, Some(TAG), true)
    }

    #[test]
    fn no_conditions_proceed() {
        assert!(conditions(&[]).is_empty());
        assert_eq!(eval(&[]), Proceed);
    }

    #[test]
    fn if_none_match_hit_is_304_for_get_and_head() {
        assert_eq!(eval(&[("if-none-match", TAG)]), NotModified);
        let head = eval_with(Method::HEAD, &[("if-none-match", TAG)], Some(TAG), false);
        assert_eq!(head, NotModified);
    }

    #[test]
    fn if_none_match_hit_is_412_for_other_methods() {
        let put = eval_with(Method::PUT, &[("if-none-match", "*")], Some(TAG), false);
        assert_eq!(put, PreconditionFailed);
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert_eq!(eval(&[("if-none-match", r#"W/"abc""#)]), NotModified);
        let weak_current = eval_with(
            Method::GET,
            &[("if-none-match", r#""abc""#)],
            Some(r#"W/"abc""#),
            false,
        );
        assert_eq!(weak_current, NotModified);
    }

    #[test]
    fn if_none_match_miss_proceeds() {
        assert_eq!(eval(&[("if-none-match", r#""other", "x""#)]), Proceed);
    }

    #[test]
    fn if_none_match_star_matches_any_representation() {
        assert_eq!(eval(&[("if-none-match", "*")]), NotModified);
        assert_eq!(
            eval_with(Method::GET, &[("if-none-match", "*")], None, false),
            NotModified
        );
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        assert_eq!(eval(&[("if-match", TAG)]), Proceed);
        assert_eq!(eval(&[("if-match", r#"W/"abc""#)]), PreconditionFailed);
        let weak_current = eval_with(
            Method::GET,
            &[("if-match", r#""abc""#)],
            Some(r#"W/"abc""#),
            false,
        );
        assert_eq!(weak_current, PreconditionFailed);
    }

    #[test]
    fn if_match_miss_is_412() {
        assert_eq!(eval(&[("if-match", r#""nope""#)]), PreconditionFailed);
    }

    #[test]
    fn if_match_without_current_tag_fails_unless_star() {
        let m = |v| eval_with(Method::GET, &[("if-match", v)], None, true);
        assert_eq!(m(r#""abc""#), PreconditionFailed);
        assert_eq!(m("*"), Proceed);
    }

    #[test]
    fn if_match_is_evaluated_before_if_none_match() {
        let fields = [("if-match", r#""nope""#), ("if-none-match", TAG)];
        assert_eq!(eval(&fields), PreconditionFailed);
    }

    #[test]
    fn if_unmodified_since_fails_when_modified_later() {
        let before = date(LAST_MODIFIED - 1);
        assert_eq!(
            eval(&[("if-unmodified-since", &before)]),
            PreconditionFailed
        );
        let same = date(LAST_MODIFIED);
        assert_eq!(eval(&[("if-unmodified-since", &same)]), Proceed);
    }

    #[test]
    fn if_unmodified_since_is_ignored_when_if_match_is_present() {
        let before = date(LAST_MODIFIED - 1);
        let fields = [("if-match", TAG), ("if-unmodified-since", before.as_str())];
        assert_eq!(eval(&fields), Proceed);
        // Even an invalid If-Match makes the request "contain" If-Match.
        let fields = [
            ("if-match", "garbage"),
            ("if-unmodified-since", before.as_str()),
        ];
        assert_eq!(eval(&fields), Proceed);
    }

    #[test]
    fn if_unmodified_since_is_ignored_without_last_modified() {
        let before = date(LAST_MODIFIED - 1);
        let outcome = eval_with(
            Method::GET,
            &[("if-unmodified-since", &before)],
            Some(TAG),
            false,
        );
        assert_eq!(outcome, Proceed);
    }

    #[test]
    fn if_unmodified_since_is_checked_before_if_none_match() {
        let before = date(LAST_MODIFIED - 1);
        let fields = [
            ("if-unmodified-since", before.as_str()),
            ("if-none-match", TAG),
        ];
        assert_eq!(eval(&fields), PreconditionFailed);
    }

    #[test]
    fn if_modified_since_not_modified_is_304() {
        assert_eq!(
            eval(&[("if-modified-since", &date(LAST_MODIFIED))]),
            NotModified
        );
        assert_eq!(
            eval(&[("if-modified-since", &date(LAST_MODIFIED + 60))]),
            NotModified
        );
        assert_eq!(
            eval(&[("if-modified-since", &date(LAST_MODIFIED - 1))]),
            Proceed
        );
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let later = date(LAST_MODIFIED + 60);
        let fields = [
            ("if-none-match", r#""other""#),
            ("if-modified-since", later.as_str()),
        ];
        assert_eq!(eval(&fields), Proceed);
        // RFC 9110 §13.1.3: even an invalid If-None-Match disables If-Modified-Since.
        let fields = [
            ("if-none-match", "garbage"),
            ("if-modified-since", later.as_str()),
        ];
        assert_eq!(eval(&fields), Proceed);
    }

    #[test]
    fn if_modified_since_only_applies_to_get_and_head() {
        let later = date(LAST_MODIFIED + 60);
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let outcome = eval_with(method, &[("if-modified-since", &later)], Some(TAG), true);
            assert_eq!(outcome, Proceed);
        }
        let head = eval_with(Method::HEAD, &[("if-modified-since", &later)], None, true);
        assert_eq!(head, NotModified);
    }

    #[test]
    fn if_modified_since_is_ignored_without_last_modified() {
        let later = date(LAST_MODIFIED + 60);
        let outcome = eval_with(
            Method::GET,
            &[("if-modified-since", &later)],
            Some(TAG),
            false,
        );
        assert_eq!(outcome, Proceed);
    }

    #[test]
    fn all_three_date_forms_parse() {
        // RFC 9110 §5.6.7
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_date(&HeaderValue::from_static(form)),
                Some(at(LAST_MODIFIED)),
                "{form}"
            );
            assert_eq!(eval(&[("if-modified-since", form)]), NotModified, "{form}");
        }
    }

    #[test]
    fn invalid_dates_are_ignored() {
        for bad in [
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37",     // no zone
            "Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Thu, 01 Jan 1920 00:00:00 GMT", // out of range
            "",
            "1994-11-06T08:49:37Z",
        ] {
            assert_eq!(parse_date(&HeaderValue::from_static(bad)), None, "{bad}");
            assert_eq!(eval(&[("if-modified-since", bad)]), Proceed, "{bad}");
            assert_eq!(eval(&[("if-unmodified-since", bad)]), Proceed, "{bad}");
        }
        let non_ascii = HeaderValue::from_bytes(b"Sun, 06 Nov 1994 08:49:37 GMT\xff").unwrap();
        assert_eq!(parse_date(&non_ascii), None);
    }

    #[test]
    fn repeated_date_fields_are_ignored() {
        let d = date(LAST_MODIFIED);
        let fields = [
            ("if-modified-since", d.as_str()),
            ("if-modified-since", d.as_str()),
        ];
        assert_eq!(eval(&fields), Proceed);
    }

    #[test]
    fn invalid_if_match_is_ignored() {
        assert_eq!(eval(&[("if-match", "abc")]), Proceed);
        assert_eq!(eval(&[("if-none-match", "abc")]), Proceed);
    }

    #[test]
    fn a_missing_resource_fails_if_match_and_passes_if_none_match_star() {
        let missing = Validators::missing();
        let put = |fields: &[(&str, &str)]| conditions(fields).evaluate(&Method::PUT, &missing);
        assert_eq!(put(&[("if-match", "*")]), PreconditionFailed);
        assert_eq!(put(&[("if-match", TAG)]), PreconditionFailed);
        assert_eq!(put(&[("if-none-match", "*")]), Proceed);
        assert_eq!(put(&[("if-none-match", TAG)]), Proceed);
        assert_eq!(put(&[]), Proceed);
    }

    #[test]
    fn an_invalid_if_match_fails_a_write_but_is_ignored_on_get() {
        for bad in ["garbage", "w/\"abc\"", ",", "\"abc"] {
            let on = |method| eval_with(method, &[("if-match", bad)], Some(TAG), true);
            assert_eq!(on(Method::PUT), PreconditionFailed, "{bad}");
            assert_eq!(on(Method::DELETE), PreconditionFailed, "{bad}");
            assert_eq!(on(Method::GET), Proceed, "{bad}");
        }
    }

    #[test]
    fn writes_are_guarded_by_if_match_or_a_valid_if_unmodified_since() {
        assert!(conditions(&[("if-match", "*")]).guards_writes());
        assert!(conditions(&[("if-unmodified-since", &date(LAST_MODIFIED))]).guards_writes());
        assert!(!conditions(&[("if-unmodified-since", "garbage")]).guards_writes());
        assert!(!conditions(&[("if-none-match", "*")]).guards_writes());
        assert!(!conditions(&[]).guards_writes());
    }
}
