//! Model-based property tests: the layer, driven through its public API,
//! against an independent model of RFC 9110 §13.2.2 written as a table.
//!
//! Requests are generated as structured values (method; each of `If-Match`,
//! `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` absent, valid,
//! invalid, `*`, lists over several lines, weak and strong tags; all three
//! date forms) and then written out as header lines with random optional
//! whitespace and empty list elements. The model decides from the structure
//! (never by parsing the text); the layer sees only the text.
//!
//! A second property checks `conditional::Preconditions` the same way for
//! every method (`GET`, `HEAD`, `PUT`, `PATCH`, `DELETE`, `POST`) and for
//! resources that exist or not, against the model extended with the rules
//! for writes.

use std::{
    convert::Infallible,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm},
};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_etag::ETagLayer;

const BODY: &[u8] = b"the representation";

/// The tag the layer computes for `BODY`, without the quotes.
fn body_opaque() -> String {
    blake3::hash(BODY).to_hex()[..32].to_owned()
}

/// Opaque tags to draw from, so that matches and near misses are frequent:
/// the layer's own tag, short ones, one with a comma inside the quotes, one
/// with obs-text, and the empty tag.
fn opaque() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(body_opaque().into_bytes()),
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(b"a,b".to_vec()),
        Just(vec![b'x', 0xE9]),
        Just(Vec::new()),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct Tag {
    weak: bool,
    opaque: Vec<u8>,
}

fn tag() -> impl Strategy<Value = Tag> {
    (any::<bool>(), opaque()).prop_map(|(weak, opaque)| Tag { weak, opaque })
}

impl Tag {
    fn write(&self, out: &mut Vec<u8>) {
        if self.weak {
            out.extend_from_slice(b"W/");
        }
        out.push(b'"');
        out.extend_from_slice(&self.opaque);
        out.push(b'"');
    }

    /// RFC 9110 §8.8.3.2.
    fn strong_eq(&self, other: &Tag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    fn weak_eq(&self, other: &Tag) -> bool {
        self.opaque == other.opaque
    }
}

/// Something that makes a list invalid wherever it appears (RFC 9110
/// §8.8.3 grammar).
fn invalid_element() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"abc".to_vec()),        // not quoted
        Just(b"w/\"a\"".to_vec()),    // lowercase weak indicator
        Just(b"\"abc".to_vec()),      // unterminated
        Just(b"\"a b\"".to_vec()),    // space is not etagc
        Just(b"\"a\"\"b\"".to_vec()), // two tags without a comma
        Just(b"W/ \"a\"".to_vec()),   // space after W/
        Just(b"*".to_vec()),          // `*` inside a list
        Just(b"\"a\tb\"".to_vec()),   // HTAB is not etagc
        Just(b"\"\xff\xfe".to_vec()), // non-UTF-8, unterminated
    ]
}

/// A generated `If-Match` or `If-None-Match` field.
#[derive(Clone, Debug)]
enum TagField {
    Absent,
    /// `*` on one line.
    Star,
    /// Lines of elements; `None` is an empty list element (`a, , b`).
    List(Vec<Vec<Option<Tag>>>),
    /// A list with one invalid element in it.
    Invalid(Vec<Vec<Option<Tag>>>, Vec<u8>),
}

fn lines() -> impl Strategy<Value = Vec<Vec<Option<Tag>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::option::weighted(0.85, tag()), 0..4),
        1..4,
    )
}

fn tag_field() -> impl Strategy<Value = TagField> {
    prop_oneof![
        3 => Just(TagField::Absent),
        1 => Just(TagField::Star),
        4 => lines().prop_map(TagField::List),
        2 => (lines(), invalid_element()).prop_map(|(l, e)| TagField::Invalid(l, e)),
    ]
}

/// What the model makes of a tag field: `None` when absent or invalid
/// (RFC 9110: an invalid field is ignored), else `*` or the tags.
enum Tags {
    Star,
    List(Vec<Tag>),
}

impl TagField {
    fn meaning(&self) -> Option<Tags> {
        match self {
            TagField::Absent | TagField::Invalid(..) => None,
            TagField::Star => Some(Tags::Star),
            TagField::List(lines) => {
                let tags: Vec<Tag> = lines.iter().flatten().flatten().cloned().collect();
                // A list of nothing but empty elements has no member: not a
                // valid `1#entity-tag`, so ignored.
                (!tags.is_empty()).then_some(Tags::List(tags))
            }
        }
    }

    /// The header lines, with random optional whitespace from `ws`.
    fn write(&self, ws: &mut impl FnMut() -> &'static [u8]) -> Vec<Vec<u8>> {
        let write_lines = |lines: &Vec<Vec<Option<Tag>>>,
                           ws: &mut dyn FnMut() -> &'static [u8]|
         -> Vec<Vec<u8>> {
            lines
                .iter()
                .map(|line| {
                    let mut out = ws().to_vec();
                    for (i, element) in line.iter().enumerate() {
                        if i > 0 {
                            out.extend_from_slice(ws());
                            out.push(b',');
                            out.extend_from_slice(ws());
                        }
                        if let Some(tag) = element {
                            tag.write(&mut out);
                        }
                    }
                    out.extend_from_slice(ws());
                    out
                })
                .collect()
        };
        match self {
            TagField::Absent => Vec::new(),
            TagField::Star => vec![[ws(), b"*", ws()].concat()],
            TagField::List(lines) => write_lines(lines, ws),
            TagField::Invalid(lines, bad) => {
                let mut out = write_lines(lines, ws);
                let last = out.last_mut().unwrap();
                last.extend_from_slice(b", ");
                last.extend_from_slice(bad);
                out
            }
        }
    }
}

/// Whole seconds around a fixed instant, so that the three date forms and
/// the comparisons are exact.
fn instant(offset: i64) -> SystemTime {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200); // 2024-01-01
    if offset >= 0 {
        base + Duration::from_secs(offset as u64)
    } else {
        base - Duration::from_secs(offset.unsigned_abs())
    }
}

#[derive(Clone, Copy, Debug)]
enum DateForm {
    ImfFixdate,
    Rfc850,
    Asctime,
}

/// A generated `If-Modified-Since` or `If-Unmodified-Since` field.
#[derive(Clone, Debug)]
enum DateField {
    Absent,
    Valid(i64, DateForm),
    Invalid(&'static str),
    /// Two lines: not a single HTTP-date (RFC 9110 §13.1.3, §13.1.4).
    Repeated(i64, i64),
}

fn date_field() -> impl Strategy<Value = DateField> {
    let form = prop_oneof![
        Just(DateForm::ImfFixdate),
        Just(DateForm::Rfc850),
        Just(DateForm::Asctime)
    ];
    prop_oneof![
        3 => Just(DateField::Absent),
        4 => (-2i64..=2, form).prop_map(|(o, f)| DateField::Valid(o, f)),
        1 => prop_oneof![
            Just("yesterday"),
            Just(""),
            Just("Mon, 32 Jan 2024 00:00:00 GMT"),
            Just("Mon, 01 Jan 2024 25:00:00 GMT"),
            Just("2024-01-01T00:00:00Z"),
            Just("Mon, 01 Jan 10000 00:00:00 GMT"),
        ]
        .prop_map(DateField::Invalid),
        1 => (-2i64..=2, -2i64..=2).prop_map(|(a, b)| DateField::Repeated(a, b)),
    ]
}

fn format_date(offset: i64, form: DateForm) -> String {
    let imf = httpdate::fmt_http_date(instant(offset)); // "Mon, 01 Jan 2024 00:00:00 GMT"
    let parts: Vec<&str> = imf.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let (wday, day, mon, year, time) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let weekday = match wday {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    match form {
        DateForm::ImfFixdate => imf.clone(),
        DateForm::Rfc850 => format!("{weekday}, {day}-{mon}-{} {time} GMT", &year[2..]),
        DateForm::Asctime => {
            let day = day.trim_start_matches('0');
            format!("{wday} {mon} {day:>2} {time} {year}")
        }
    }
}

impl DateField {
    fn meaning(&self) -> Option<SystemTime> {
        match self {
            DateField::Valid(offset, _) => Some(instant(*offset)),
            _ => None,
        }
    }

    fn write(&self) -> Vec<Vec<u8>> {
        match self {
            DateField::Absent => Vec::new(),
            DateField::Valid(offset, form) => vec![format_date(*offset, *form).into_bytes()],
            DateField::Invalid(text) => vec![text.as_bytes().to_vec()],
            DateField::Repeated(a, b) => vec![
                format_date(*a, DateForm::ImfFixdate).into_bytes(),
                format_date(*b, DateForm::ImfFixdate).into_bytes(),
            ],
        }
    }
}

/// The `ETag` the handler sets itself, if any.
#[derive(Clone, Debug)]
enum HandlerTag {
    None,
    Valid(Tag),
    /// Kept on the response, but matches nothing but `*`.
    Unparsable,
}

/// The `Last-Modified` the handler sets itself, if any.
#[derive(Clone, Debug)]
enum HandlerDate {
    None,
    Valid(i64),
    Unparsable,
}

#[derive(Clone, Debug)]
struct Case {
    head: bool,
    if_match: TagField,
    if_none_match: TagField,
    if_modified_since: DateField,
    if_unmodified_since: DateField,
    etag: HandlerTag,
    last_modified: HandlerDate,
    /// Indices into the whitespace choices, consumed in turn.
    ws: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    let etag = prop_oneof![
        2 => Just(HandlerTag::None),
        2 => tag().prop_map(HandlerTag::Valid),
        1 => Just(HandlerTag::Unparsable),
    ];
    let last_modified = prop_oneof![
        2 => Just(HandlerDate::None),
        2 => (-2i64..=2).prop_map(HandlerDate::Valid),
        1 => Just(HandlerDate::Unparsable),
    ];
    (
        any::<bool>(),
        tag_field(),
        tag_field(),
        date_field(),
        date_field(),
        etag,
        last_modified,
        prop::collection::vec(0u8..4, 64),
    )
        .prop_map(|(head, im, inm, ims, ius, etag, lm, ws)| Case {
            head,
            if_match: im,
            if_none_match: inm,
            if_modified_since: ims,
            if_unmodified_since: ius,
            etag,
            last_modified: lm,
            ws,
        })
}

/// The model for the layer: a `GET` or `HEAD` whose response would be 200,
/// so its resource exists (see [`write_model`] for the steps).
fn model(case: &Case) -> StatusCode {
    let method = if case.head { Method::HEAD } else { Method::GET };
    write_model(case, &method, true)
}

/// How many header values the properties have generated, for the record.
static VALUES: AtomicU64 = AtomicU64::new(0);

fn build_request(case: &Case) -> Request<()> {
    const WS: [&[u8]; 4] = [b"", b" ", b"\t", b"  "];
    let mut picks = case.ws.iter().cycle();
    let mut ws = move || WS[usize::from(*picks.next().unwrap())];
    let method = if case.head { Method::HEAD } else { Method::GET };
    let mut request = Request::builder().method(method).body(()).unwrap();
    let fields = [
        (header::IF_MATCH, case.if_match.write(&mut ws)),
        (header::IF_NONE_MATCH, case.if_none_match.write(&mut ws)),
        (header::IF_MODIFIED_SINCE, case.if_modified_since.write()),
        (
            header::IF_UNMODIFIED_SINCE,
            case.if_unmodified_since.write(),
        ),
    ];
    for (name, lines) in fields {
        for line in lines {
            VALUES.fetch_add(1, Ordering::Relaxed);
            let value = HeaderValue::from_bytes(&line).expect("generated values are field values");
            request.headers_mut().append(name.clone(), value);
        }
    }
    request
}

fn layered() -> impl Service<
    Request<()>,
    Response = Response<tower_etag::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    ServiceBuilder::new()
        .layer(ETagLayer::new())
        .service_fn(|request: Request<()>| async move {
            let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
            // The test passes the handler's validators in the request's
            // extensions.
            if let Some(Handler(etag, lm)) = request.extensions().get::<Handler>().cloned() {
                if let Some(etag) = etag {
                    response.headers_mut().insert(header::ETAG, etag);
                }
                if let Some(lm) = lm {
                    response.headers_mut().insert(header::LAST_MODIFIED, lm);
                }
            }
            Ok::<_, Infallible>(response)
        })
}

#[derive(Clone)]
struct Handler(Option<HeaderValue>, Option<HeaderValue>);

fn handler_fields(case: &Case) -> Handler {
    let etag = match &case.etag {
        HandlerTag::None => None,
        HandlerTag::Valid(tag) => {
            let mut out = Vec::new();
            tag.write(&mut out);
            Some(HeaderValue::from_bytes(&out).unwrap())
        }
        HandlerTag::Unparsable => Some(HeaderValue::from_static("unquoted")),
    };
    let lm = match case.last_modified {
        HandlerDate::None => None,
        HandlerDate::Valid(offset) => {
            Some(HeaderValue::from_str(&httpdate::fmt_http_date(instant(offset))).unwrap())
        }
        HandlerDate::Unparsable => Some(HeaderValue::from_static("last tuesday")),
    };
    Handler(etag, lm)
}

proptest! {
    // XorShift: ChaCha, the default, is slow in unoptimised test builds.
    #![proptest_config(Config {
        cases: 50_000,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    })]

    #[test]
    fn the_layer_agrees_with_the_rfc_model(case in case()) {
        let mut request = build_request(&case);
        request.extensions_mut().insert(handler_fields(&case));
        // Everything is ready at once: no runtime needed.
        let response = layered()
            .oneshot(request)
            .now_or_never()
            .expect("ready")
            .unwrap();
        let expected = model(&case);
        prop_assert_eq!(response.status(), expected, "{:?}", case);

        let (parts, body) = response.into_parts();
        let body = body.collect().now_or_never().expect("ready").unwrap().to_bytes();
        match expected {
            StatusCode::OK if !case.head => prop_assert_eq!(&body[..], BODY),
            _ => prop_assert!(body.is_empty()),
        }
        // The 304 and 412 keep the tag the 200 would carry.
        let expected_etag = match &case.etag {
            HandlerTag::None => Some(format!("\"{}\"", body_opaque()).into_bytes()),
            _ => handler_fields(&case).0.map(|v| v.as_bytes().to_vec()),
        };
        prop_assert_eq!(
            parts.headers.get(header::ETAG).map(|v| v.as_bytes().to_vec()),
            expected_etag
        );
    }
}

#[test]
fn date_forms_round_trip() {
    for form in [DateForm::ImfFixdate, DateForm::Rfc850, DateForm::Asctime] {
        for offset in -2..=2 {
            let text = format_date(offset, form);
            assert_eq!(
                httpdate::parse_http_date(&text).ok(),
                Some(instant(offset)),
                "{text}"
            );
        }
    }
    assert_eq!(
        format_date(0, DateForm::Rfc850),
        "Monday, 01-Jan-24 00:00:00 GMT"
    );
    assert_eq!(
        format_date(0, DateForm::Asctime),
        "Mon Jan  1 00:00:00 2024"
    );
}

/// The model: RFC 9110 §13.2.2, step by step, for any method and for a
/// resource that may not exist. Without an entity tag of the handler's own
/// the current tag is the layer's (strong), beside the handler's
/// Last-Modified if any (RFC 9110 §8.8.1). For writes: §13.1.1, `If-Match`
/// is false without a current representation, even `*`; §13.1.2, a true
/// `If-None-Match` is 412 for methods other than `GET`/`HEAD`; and the
/// crate's fail-safe rule, an invalid `If-Match` on a write is false.
/// Invalid fields are otherwise ignored, and §13.1.3 / §13.1.4: "MUST
/// ignore" the date conditions when the request contains If-None-Match /
/// If-Match, valid or not.
fn write_model(case: &Case, method: &Method, exists: bool) -> StatusCode {
    let read = method == Method::GET || method == Method::HEAD;
    let current_tag = match (&case.etag, exists) {
        (_, false) | (HandlerTag::Unparsable, _) => None,
        (HandlerTag::Valid(tag), true) => Some(tag.clone()),
        (HandlerTag::None, true) => Some(Tag {
            weak: false,
            opaque: body_opaque().into_bytes(),
        }),
    };
    let last_modified = match (case.last_modified.clone(), exists) {
        (HandlerDate::Valid(offset), true) => Some(instant(offset)),
        _ => None,
    };
    // Step 1.
    if !matches!(case.if_match, TagField::Absent) {
        let holds = match case.if_match.meaning() {
            _ if !exists => false,
            Some(Tags::Star) => true,
            Some(Tags::List(tags)) => current_tag
                .as_ref()
                .is_some_and(|current| tags.iter().any(|t| t.strong_eq(current))),
            None => read,
        };
        if !holds {
            return StatusCode::PRECONDITION_FAILED;
        }
    }
    // Step 2.
    if matches!(case.if_match, TagField::Absent) {
        if let (Some(date), Some(lm)) = (case.if_unmodified_since.meaning(), last_modified) {
            if lm > date {
                return StatusCode::PRECONDITION_FAILED;
            }
        }
    }
    // Step 3: nothing matches a resource that does not exist.
    if exists {
        let matches = match case.if_none_match.meaning() {
            Some(Tags::Star) => true,
            Some(Tags::List(tags)) => current_tag
                .as_ref()
                .is_some_and(|current| tags.iter().any(|t| t.weak_eq(current))),
            None => false,
        };
        if matches {
            return if read {
                StatusCode::NOT_MODIFIED
            } else {
                StatusCode::PRECONDITION_FAILED
            };
        }
    }
    // Step 4.
    if read && matches!(case.if_none_match, TagField::Absent) {
        if let (Some(date), Some(lm)) = (case.if_modified_since.meaning(), last_modified) {
            if lm <= date {
                return StatusCode::NOT_MODIFIED;
            }
        }
    }
    StatusCode::OK
}

proptest! {
    #![proptest_config(Config {
        cases: 20_000,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    })]

    #[test]
    fn preconditions_agree_with_the_rfc_model_for_every_method(
        case in case(),
        method in prop::sample::select(vec![
            Method::GET, Method::HEAD, Method::PUT, Method::PATCH, Method::DELETE, Method::POST,
        ]),
        exists in prop::bool::weighted(0.8),
    ) {
        use tower_etag::{conditional::{Current, Preconditions}, EntityTag};

        let (mut parts, ()) = build_request(&case).into_parts();
        parts.method = method.clone();
        let Handler(etag, last_modified) = handler_fields(&case);
        let etag = match etag {
            Some(value) => EntityTag::try_from(&value).ok(),
            // Without a tag of the handler's own, the one the layer mints.
            None => Some(ETagLayer::new().tag_for(BODY)),
        };
        let last_modified = last_modified.and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
        let current = match (exists, &etag) {
            (false, _) => Current::missing(),
            (true, Some(etag)) => Current::tagged(etag),
            (true, None) => Current::untagged(),
        };
        let current = match last_modified {
            Some(at) => current.last_modified(at),
            None => current,
        };
        let got = Preconditions::from_parts(&parts)
            .check(current)
            .map_or_else(|rejection| rejection.status(), |()| StatusCode::OK);
        prop_assert_eq!(got, write_model(&case, &method, exists), "{:?} {} exists={}", case, method, exists);
    }
}
