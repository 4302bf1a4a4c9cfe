//! Provider-aware views of a captured request: the claims of a bearer JWT
//! (Auth0 and most identity providers send one) and the parts of a Hasura
//! Action call. A developer debugging "why did my Action get a 401" wants
//! `exp` and `aud` without pasting the token into a website, and a Hasura
//! handler's author wants the action's name and `session_variables` without
//! reading the envelope.
//!
//! Pure functions over what was captured; `show.rs` prints them, `relay
//! replay` warns with [`expired_bearer_warning`], and the inspector page
//! decodes the same things in `app.js` (same rules, same wording). Nothing
//! here verifies a signature: the claims are what the token *says*, and
//! every view labels them "not verified". Captured data comes from whoever
//! reached the public URL, so nothing here fails on it: a token that is
//! not a JWT is shown as "not a JWT" with the reason.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::output::printable;
use crate::show::pretty_json;

/// Longest bearer token decoded. Real JWTs are a few hundred bytes to a
/// few KiB (an Auth0 token with many permissions stays under 8 KiB); the
/// cap bounds the work a hostile header can cause, and is far above what
/// web servers accept in one header line anyway.
pub const MAX_TOKEN_CHARS: usize = 64 * 1024;

/// base64url as RFC 7515 writes it (no padding), also accepting padded
/// input: some hand-rolled encoders add it, and the point is to show what
/// the token carries, not to judge its encoding.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What the `Authorization: Bearer ...` header of a request carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Bearer {
    /// A JWT, decoded but not verified.
    Jwt(Claims),
    /// A bearer token that is not a JWT (an opaque access token, or junk).
    NotJwt(NotJwt),
}

/// Why a bearer token is not shown as a JWT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotJwt {
    #[error("{0} dot-separated parts, a JWT has 3")]
    Parts(usize),
    #[error("its {0} is not base64url")]
    Base64(&'static str),
    #[error("its {0} is not JSON")]
    Json(&'static str),
    #[error("its {0} is JSON but not an object")]
    NotObject(&'static str),
    #[error("{0} characters, more than the {MAX_TOKEN_CHARS} decoded")]
    TooLong(usize),
}

/// The claims a developer checks first; others are not shown (`--json`
/// and `--raw` have the whole header). Strings are as the token has them;
/// a claim of an unexpected JSON type is kept as compact JSON text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// The header's `alg`: `none` or `HS256` where `RS256` was expected is
    /// worth seeing.
    pub alg: Option<String>,
    pub iss: Option<String>,
    pub sub: Option<String>,
    /// `aud` as a list: JWTs may carry one string or an array.
    pub aud: Vec<String>,
    pub azp: Option<String>,
    pub scope: Option<String>,
    pub iat: Option<Time>,
    pub exp: Option<Time>,
    pub nbf: Option<Time>,
}

/// A NumericDate claim (seconds since the epoch), or what was there instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Time {
    At(i64),
    NotANumber(String),
}

/// The token of the first `Authorization: Bearer ...` header, if any.
/// The scheme is case-insensitive (RFC 9110 §11.1).
pub fn bearer_token(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("authorization"))
        .find_map(|(_, v)| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
}

/// The request's bearer token, decoded; `None` without one.
pub fn bearer(headers: &[(String, String)]) -> Option<Bearer> {
    let token = bearer_token(headers)?;
    Some(match decode_jwt(token) {
        Ok(claims) => Bearer::Jwt(claims),
        Err(why) => Bearer::NotJwt(why),
    })
}

/// Decodes a JWT's header and payload without checking its signature.
pub fn decode_jwt(token: &str) -> Result<Claims, NotJwt> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(NotJwt::TooLong(token.len()));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(NotJwt::Parts(parts.len()));
    };
    let header = json_object(header, "header")?;
    let payload = json_object(payload, "payload")?;
    // Not decoded (nothing checks it), but a JWS signature is base64url
    // too, and empty for `alg: none`.
    if !signature
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    {
        return Err(NotJwt::Base64("signature"));
    }
    let text = |key: &str| payload.get(key).map(claim_text);
    let time = |key: &str| {
        payload.get(key).map(|v| match v {
            // NumericDate may have a fraction; the second is enough here.
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .map_or_else(|| Time::NotANumber(n.to_string()), Time::At),
            other => Time::NotANumber(claim_text(other)),
        })
    };
    Ok(Claims {
        alg: header.get("alg").map(claim_text),
        iss: text("iss"),
        sub: text("sub"),
        aud: match payload.get("aud") {
            None => Vec::new(),
            Some(Value::Array(list)) => list.iter().map(claim_text).collect(),
            Some(one) => vec![claim_text(one)],
        },
        azp: text("azp"),
        scope: text("scope"),
        iat: time("iat"),
        exp: time("exp"),
        nbf: time("nbf"),
    })
}

/// One base64url part as a JSON object.
fn json_object(part: &str, which: &'static str) -> Result<serde_json::Map<String, Value>, NotJwt> {
    let bytes = B64URL.decode(part).map_err(|_| NotJwt::Base64(which))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(NotJwt::NotObject(which)),
        Err(_) => Err(NotJwt::Json(which)),
    }
}

/// A string claim as itself, anything else as compact JSON.
fn claim_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The JWT section of `relay requests show`, ending in a newline:
///
/// ```text
/// JWT (not verified, RS256)
///   iss    https://dev-x.us.auth0.com/
///   exp    2026-11-24 10:20:02 UTC (expired 2 h ago)
/// ```
pub fn render_bearer(bearer: &Bearer, now: i64, zone: &TimeZone) -> String {
    let claims = match bearer {
        Bearer::NotJwt(why) => return format!("Bearer token: not a JWT ({why})\n"),
        Bearer::Jwt(claims) => claims,
    };
    let mut out = match &claims.alg {
        Some(alg) => format!("JWT (not verified, {})\n", printable(alg)),
        None => "JWT (not verified)\n".to_owned(),
    };
    let mut line = |name: &str, value: &str| {
        let _ = writeln!(out, "  {name:<6} {}", printable(value));
    };
    let aud = (!claims.aud.is_empty()).then(|| claims.aud.join(", "));
    for (name, value) in [
        ("iss", &claims.iss),
        ("sub", &claims.sub),
        ("aud", &aud),
        ("azp", &claims.azp),
        ("scope", &claims.scope),
    ] {
        if let Some(v) = value {
            line(name, v);
        }
    }
    for (name, time) in [
        ("iat", &claims.iat),
        ("exp", &claims.exp),
        ("nbf", &claims.nbf),
    ] {
        if let Some(t) = time {
            line(name, &time_claim(name, t, now, zone));
        }
    }
    if !out.contains("\n  ") {
        out.push_str("  (none of iss, sub, aud, azp, scope, iat, exp, nbf)\n");
    }
    out
}

/// `2026-11-24 10:20:02 UTC (expired 2 h ago)`, said the way each claim means it.
fn time_claim(name: &str, t: &Time, now: i64, zone: &TimeZone) -> String {
    let at = match t {
        Time::At(at) => *at,
        Time::NotANumber(text) => return format!("{text} (not a time)"),
    };
    let when = local_time(at, zone);
    let rel = match name {
        "exp" => expiry(at, now),
        "nbf" if at > now => format!("not yet valid: {}", ago_or_in(at, now)),
        "nbf" => format!("valid since {}", ago_or_in(at, now)),
        _ => format!("issued {}", ago_or_in(at, now)),
    };
    format!("{when} ({rel})")
}

/// `expires in 5 min` or `expired 2 h ago`: a token is expired from its
/// `exp` second on (RFC 7519 §4.1.4: "on or after").
pub fn expiry(exp: i64, now: i64) -> String {
    if exp > now {
        format!("expires {}", ago_or_in(exp, now))
    } else {
        format!("expired {}", ago_or_in(exp, now))
    }
}

/// `in 5 min` / `2 h ago` / `just now`.
fn ago_or_in(at: i64, now: i64) -> String {
    let d = at.abs_diff(now);
    if d == 0 {
        return "just now".to_owned();
    }
    if at > now {
        format!("in {}", span(d))
    } else {
        format!("{} ago", span(d))
    }
}

/// A rounded-down span, in the largest unit that fits: `42 s`, `5 min`,
/// `2 h`, `3 d`. Precise times are printed next to it.
pub fn span(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// `2026-11-24 10:20:02 UTC` (in `zone`, which it names: `Asia/Tokyo`,
/// `UTC`); a time outside years 0..=9999 (or jiff's range, which ends
/// on 9999-12-30) as its number.
fn local_time(secs: i64, zone: &TimeZone) -> String {
    let shown = jiff::Timestamp::from_second(secs)
        .ok()
        .map(|t| t.to_zoned_datetime(zone.clone()))
        .filter(|z| (0..=9999).contains(&z.year()));
    match shown {
        Some(z) => format!(
            "{} {}",
            z.strftime("%F %T"),
            crate::localtime::zone_label(zone)
        ),
        None => format!("{secs} (seconds since 1970)"),
    }
}

/// Seconds since the epoch; before it (a broken clock), negative.
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The line `relay replay` prints before sending a request whose bearer
/// JWT has expired: the local app will most likely refuse it, and the
/// developer should know that a 401 is the token, not their change.
/// `None` without a bearer JWT, or with one that has not expired.
pub fn expired_bearer_warning(
    headers: &[(String, String)],
    now: SystemTime,
    zone: &TimeZone,
) -> Option<String> {
    let Some(Bearer::Jwt(claims)) = bearer(headers) else {
        return None;
    };
    let Some(Time::At(exp)) = claims.exp else {
        return None;
    };
    let now = unix_secs(now);
    (exp <= now).then(|| {
        format!(
            "warning: the request's bearer token {} (exp {}): the app will likely answer 401",
            expiry(exp, now),
            local_time(exp, zone)
        )
    })
}

/// A Hasura Action call: Hasura POSTs `{"action": {"name": ...}, "input":
/// ..., "session_variables": ..., "request_query": ...}` to the handler.
#[derive(Debug, Clone, PartialEq)]
pub struct HasuraAction {
    pub name: String,
    /// `input` pretty-printed, keys in the order Hasura sent them.
    pub input: String,
    /// `x-hasura-role`, `x-hasura-user-id`, ...: sorted by name.
    pub session_variables: Vec<(String, String)>,
    /// The GraphQL operation that triggered the action, when sent.
    pub request_query: Option<String>,
}

#[derive(Deserialize)]
struct HasuraBody<'a> {
    action: ActionName,
    #[serde(borrow)]
    input: &'a RawValue,
    session_variables: serde_json::Map<String, Value>,
    #[serde(default)]
    request_query: Option<String>,
}

#[derive(Deserialize)]
struct ActionName {
    name: String,
}

/// The Hasura Action in a request, if it is one: a POST whose body is a
/// JSON object with `action.name`, `input` and `session_variables`. A
/// truncated body does not parse and is not recognised.
pub fn hasura_action(method: &str, body: &[u8]) -> Option<HasuraAction> {
    if !method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let call: HasuraBody<'_> = serde_json::from_slice(body).ok()?;
    let mut session_variables: Vec<(String, String)> = call
        .session_variables
        .iter()
        .map(|(k, v)| (k.clone(), claim_text(v)))
        .collect();
    session_variables.sort();
    let raw = call.input.get();
    Some(HasuraAction {
        name: call.action.name,
        input: pretty_json(raw).unwrap_or_else(|| raw.to_owned()),
        session_variables,
        request_query: call.request_query,
    })
}

/// The Hasura section of `relay requests show`, ending in a newline.
pub fn render_hasura(action: &HasuraAction) -> String {
    let mut out = format!("Hasura action {}\n", printable(&action.name));
    if let Some(query) = &action.request_query {
        // One line: the operation is context, its layout is not.
        let query = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "  query   {}", printable(&query));
    }
    out.push_str("  input   ");
    let input = action
        .input
        .lines()
        .collect::<Vec<_>>()
        .join("\n          ");
    let _ = writeln!(out, "{}", printable_lines(&input));
    if action.session_variables.is_empty() {
        out.push_str("  session variables: none\n");
    } else {
        out.push_str("  session variables\n");
        for (name, value) in &action.session_variables {
            let _ = writeln!(out, "    {}: {}", printable(name), printable(value));
        }
    }
    out
}

/// [`printable`] line by line, keeping the newlines.
fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(|l| printable(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every provider section for a request, as `relay requests show` prints
/// them before the request's head; empty when there is none.
pub fn render(
    method: &str,
    request: &relay_shared::api::Message,
    now: i64,
    zone: &TimeZone,
) -> String {
    let mut out = String::new();
    if let Some(b) = bearer(&request.headers) {
        out.push_str(&render_bearer(&b, now, zone));
    }
    if let Some(action) = hasura_action(method, &request.body) {
        out.push_str(&render_hasura(&action));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_515_302; // 2026-11-24 10:15:02 UTC

    fn b64(json: &str) -> String {
        B64URL.encode(json)
    }

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(r#"{"alg":"RS256","typ":"JWT"}"#),
            b64(payload)
        )
    }

    fn auth(value: &str) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            ("Authorization".into(), value.into()),
        ]
    }

    #[test]
    fn auth0_access_token_shows_each_claim_and_its_expiry() {
        let token = jwt(&format!(
            r#"{{"iss":"https://dev-x.us.auth0.com/","sub":"auth0|42","aud":["https://api.example.com","https://dev-x.us.auth0.com/userinfo"],"azp":"abc123","scope":"openid profile read:users","iat":{},"exp":{},"nbf":{}}}"#,
            NOW - 600,
            NOW + 300,
            NOW - 600
        ));
        let b = bearer(&auth(&format!("Bearer {token}"))).expect("a bearer header");
        let shown = render_bearer(&b, NOW, &TimeZone::UTC);
        assert_eq!(
            shown,
            "JWT (not verified, RS256)
  iss    https://dev-x.us.auth0.com/
  sub    auth0|42
  aud    https://api.example.com, https://dev-x.us.auth0.com/userinfo
  azp    abc123
  scope  openid profile read:users
  iat    2026-11-24 10:05:02 UTC (issued 10 min ago)
  exp    2026-11-24 10:20:02 UTC (expires in 5 min)
  nbf    2026-11-24 10:05:02 UTC (valid since 10 min ago)
"
        );
        assert!(!shown.contains(&token));
    }

    #[test]
    fn aud_as_one_string_expired_and_not_yet_valid() {
        let token = jwt(&format!(
            r#"{{"aud":"https://api","exp":{},"nbf":{}}}"#,
            NOW - 2 * 3600 - 5,
            NOW + 180
        ));
        let Ok(c) = decode_jwt(&token) else {
            panic!("a JWT")
        };
        assert_eq!(c.aud, ["https://api"]);
        let shown = render_bearer(&Bearer::Jwt(c), NOW, &TimeZone::UTC);
        assert!(shown.contains("  aud    https://api\n"), "{shown}");
        assert!(shown.contains("(expired 2 h ago)"), "{shown}");
        assert!(shown.contains("(not yet valid: in 3 min)"), "{shown}");
        // Expired from its exp second on.
        assert_eq!(expiry(NOW, NOW), "expired just now");
        assert_eq!(expiry(NOW + 1, NOW), "expires in 1 s");
        assert_eq!(expiry(NOW - 3 * 86_400, NOW), "expired 3 d ago");
    }

    #[test]
    fn odd_claim_types_are_shown_not_refused() {
        let token = jwt(
            r#"{"iss":7,"aud":[1,"x"],"exp":"tomorrow","iat":1795515302.75,"scope":["a","b"]}"#,
        );
        let c = decode_jwt(&token).expect("a JWT with odd claims");
        assert_eq!(c.iss.as_deref(), Some("7"));
        assert_eq!(c.aud, ["1", "x"]);
        assert_eq!(c.exp, Some(Time::NotANumber("tomorrow".into())));
        assert_eq!(c.iat, Some(Time::At(NOW)));
        assert_eq!(c.scope.as_deref(), Some(r#"["a","b"]"#));
        // An empty payload object is a JWT with nothing to show.
        let empty = render_bearer(
            &Bearer::Jwt(decode_jwt(&jwt("{}")).expect("a JWT")),
            NOW,
            &TimeZone::UTC,
        );
        assert!(empty.contains("(none of iss"), "{empty}");
        // Padded base64url and an `alg: none` token with no signature decode too.
        let pad = |json: &str| base64::engine::general_purpose::URL_SAFE.encode(json);
        let padded = format!("{}.{}.", pad(r#"{"alg":"none"}"#), pad(r#"{"sub":"1"}"#));
        assert!(padded.contains("=."), "{padded}");
        assert_eq!(decode_jwt(&padded).map(|c| c.sub), Ok(Some("1".into())));
    }

    #[test]
    fn tokens_that_are_not_jwts_say_why() {
        let header = b64(r#"{"alg":"HS256"}"#);
        let cases = [
            ("opaque-access-token".to_owned(), NotJwt::Parts(1)),
            (format!("{header}.{}", b64("{}")), NotJwt::Parts(2)),
            (format!("{header}.a.b.c"), NotJwt::Parts(4)),
            (
                format!("{header}.!!!not base64!!!.sig"),
                NotJwt::Base64("payload"),
            ),
            (
                format!("{header}.{}.sig", b64("not json")),
                NotJwt::Json("payload"),
            ),
            (
                format!("{header}.{}.sig", b64("[1,2]")),
                NotJwt::NotObject("payload"),
            ),
            (
                format!("{header}.{}.sig", b64("\"str\"")),
                NotJwt::NotObject("payload"),
            ),
            (
                format!("{}.{}.sig", b64("[]"), b64("{}")),
                NotJwt::NotObject("header"),
            ),
            (
                format!("{header}.{}.s g", b64("{}")),
                NotJwt::Base64("signature"),
            ),
            (
                format!("{header}.{}.sig", B64URL.encode([0xff, 0xfe])),
                NotJwt::Json("payload"),
            ),
            ("..".to_owned(), NotJwt::Json("header")),
        ];
        for (token, why) in cases {
            assert_eq!(decode_jwt(&token), Err(why.clone()), "{token}");
            let b = bearer(&auth(&format!("Bearer {token}"))).expect("a bearer header");
            assert_eq!(
                render_bearer(&b, NOW, &TimeZone::UTC),
                format!("Bearer token: not a JWT ({why})\n")
            );
        }
        // A deeply nested payload is refused by the JSON parser, not a stack overflow.
        let deep = format!("{header}.{}.sig", b64(&"[".repeat(20_000)));
        assert_eq!(decode_jwt(&deep), Err(NotJwt::Json("payload")));
    }

    #[test]
    fn huge_tokens_are_not_decoded_and_large_ones_are() {
        let huge = format!("{}.{}.sig", b64("{}"), "A".repeat(1 << 20));
        assert_eq!(decode_jwt(&huge), Err(NotJwt::TooLong(huge.len())));
        let big_scope = "read:x ".repeat(2000);
        let large = jwt(&format!(r#"{{"scope":"{}"}}"#, big_scope.trim()));
        assert!(large.len() > 16 * 1024 && large.len() <= MAX_TOKEN_CHARS);
        assert_eq!(
            decode_jwt(&large).map(|c| c.scope.map(|s| s.len())),
            Ok(Some(big_scope.trim().len()))
        );
    }

    #[test]
    fn only_bearer_authorization_is_read() {
        assert_eq!(bearer(&auth("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer(&auth("Bearer")), None);
        assert_eq!(bearer(&[]), None);
        assert_eq!(bearer_token(&auth("  bearer   tok  ")), Some("tok"));
        // Control characters and bidi overrides in claims cannot reach the terminal raw.
        let token = jwt(r#"{"sub":"a\u001b[31mb\u202e"}"#);
        let b = bearer(&auth(&format!("Bearer {token}"))).expect("a bearer header");
        assert_eq!(
            render_bearer(&b, NOW, &TimeZone::UTC),
            "JWT (not verified, RS256)\n  sub    a\u{fffd}[31mb\u{fffd}\n"
        );
    }

    #[test]
    fn replay_warns_only_for_an_expired_token() {
        let at = |s: i64| UNIX_EPOCH + std::time::Duration::from_secs(s as u64);
        let expired = auth(&format!(
            "Bearer {}",
            jwt(&format!(r#"{{"exp":{}}}"#, NOW - 7200))
        ));
        assert_eq!(
            expired_bearer_warning(&expired, at(NOW), &TimeZone::UTC).as_deref(),
            Some(
                "warning: the request's bearer token expired 2 h ago (exp 2026-11-24 08:15:02 UTC): \
                 the app will likely answer 401"
            )
        );
        let fresh = auth(&format!(
            "Bearer {}",
            jwt(&format!(r#"{{"exp":{}}}"#, NOW + 60))
        ));
        assert_eq!(
            expired_bearer_warning(&fresh, at(NOW), &TimeZone::UTC),
            None
        );
        assert_eq!(
            expired_bearer_warning(&auth("Bearer opaque"), at(NOW), &TimeZone::UTC),
            None
        );
        assert_eq!(
            expired_bearer_warning(
                &auth(&format!("Bearer {}", jwt("{}"))),
                at(NOW),
                &TimeZone::UTC
            ),
            None
        );
    }

    #[test]
    fn times_in_the_zone_across_the_calendar() {
        assert_eq!(local_time(0, &TimeZone::UTC), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            local_time(951_782_400, &TimeZone::UTC),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(local_time(-1, &TimeZone::UTC), "1969-12-31 23:59:59 UTC");
        // jiff's range ends a day early (room for any offset): the last
        // day of 9999 is shown as its number.
        assert_eq!(
            local_time(253_402_128_000, &TimeZone::UTC),
            "9999-12-30 00:00:00 UTC"
        );
        assert_eq!(
            local_time(253_402_300_799, &TimeZone::UTC),
            "253402300799 (seconds since 1970)"
        );
        assert_eq!(
            local_time(i64::MAX, &TimeZone::UTC),
            format!("{} (seconds since 1970)", i64::MAX)
        );
        assert_eq!(
            local_time(i64::MIN, &TimeZone::UTC),
            format!("{} (seconds since 1970)", i64::MIN)
        );
        let tokyo = TimeZone::get("Asia/Tokyo").expect("tzdb has Asia/Tokyo");
        assert_eq!(local_time(0, &tokyo), "1970-01-01 09:00:00 Asia/Tokyo");
        assert_eq!(span(59), "59 s");
        assert_eq!(span(3599), "59 min");
        assert_eq!(span(86_399), "23 h");
        assert_eq!(unix_secs(UNIX_EPOCH), 0);
    }

    #[test]
    fn hasura_action_call_shows_name_input_and_session_variables() {
        let body = br#"{"action":{"name":"addUser"},"input":{"name":"Ada","age":36,"score":1.50},"session_variables":{"x-hasura-user-id":"42","x-hasura-role":"user"},"request_query":"mutation {\n  addUser(name: \"Ada\") { id }\n}"}"#;
        let a = hasura_action("POST", body).expect("a Hasura action call");
        assert_eq!(a.name, "addUser");
        assert_eq!(
            render_hasura(&a),
            "Hasura action addUser
  query   mutation { addUser(name: \"Ada\") { id } }
  input   {
            \"name\": \"Ada\",
            \"age\": 36,
            \"score\": 1.50
          }
  session variables
    x-hasura-role: user
    x-hasura-user-id: 42
"
        );
    }

    #[test]
    fn other_bodies_are_not_hasura_actions() {
        let ok = br#"{"action":{"name":"a"},"input":{},"session_variables":{}}"#;
        assert!(hasura_action("post", ok).is_some());
        assert_eq!(hasura_action("GET", ok), None);
        for body in [
            &br#"{"action":{"name":"a"},"input":{}}"#[..],
            br#"{"action":"a","input":{},"session_variables":{}}"#,
            br#"{"action":{"name":"a"},"input":{},"session_variables":[]}"#,
            br#"{"action":{"name":"a"},"input":{},"session_variables":{}"#,
            br#"[{"action":{"name":"a"}}]"#,
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(
                hasura_action("POST", body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let none = hasura_action("POST", ok).expect("an action");
        assert!(render_hasura(&none).ends_with("  input   {}\n  session variables: none\n"));
    }
}
