//! Secrets in captured headers, masked wherever a capture is shown
//! (`relay requests show`, `relay replay --diff`, and the inspector page,
//! whose masked values `inspector::views` computes here). Terminals are
//! scrolled back and screens are shared; a masked value keeps a short
//! prefix and its length, so two tokens can still be told apart and a
//! missing or empty one is still seen.
//!
//! Query strings are masked by [`crate::output::redact_query`]; bodies are
//! shown as captured (`--raw` and `--json` show headers as captured too).

/// Header names whose values are always secrets.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];
/// Parts of header names that mark a secret value (`x-api-key`,
/// `stripe-signature`, `x-auth-token`, ...).
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "signature",
    "api-key",
    "apikey",
    "password",
];
/// Most characters of a secret kept: enough to recognise a JWT
/// (`eyJhbGci`) or a key's prefix, never more than a quarter of it.
const KEEP: usize = 8;

/// Whether the value of header `name` is a secret.
pub fn is_secret(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str()) || SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// The value of header `name` as shown: masked if it is a secret.
pub fn mask_header(name: &str, value: &str) -> String {
    if !is_secret(name) {
        return value.to_owned();
    }
    match name.trim().to_ascii_lowercase().as_str() {
        // Every cookie's value; the names say which cookies were sent.
        "cookie" => value
            .split(';')
            .map(|c| mask_pair(c.trim()))
            .collect::<Vec<_>>()
            .join("; "),
        // The cookie's value; its attributes (Path, Expires, ...) are not
        // secret and say what kind of cookie it is.
        "set-cookie" => match value.split_once(';') {
            Some((pair, attrs)) => format!("{};{attrs}", mask_pair(pair.trim())),
            None => mask_pair(value.trim()),
        },
        // `Bearer eyJhbGci… [812 chars]`: the scheme is not secret.
        "authorization" | "proxy-authorization" => match value.trim().split_once(' ') {
            Some((scheme, credentials)) => format!("{scheme} {}", mask(credentials.trim())),
            None => mask(value.trim()),
        },
        _ => mask(value.trim()),
    }
}

/// `name=value` with the value masked.
fn mask_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((name, value)) => format!("{name}={}", mask(value)),
        None => mask(pair),
    }
}

/// `prefix… [N chars]`; an empty secret stays empty.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n == 0 {
        return String::new();
    }
    let prefix: String = secret.chars().take(KEEP.min(n / 4)).collect();
    format!("{prefix}… [{n} chars]")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    #[test]
    fn bearer_tokens_keep_scheme_prefix_and_length() {
        assert_eq!(
            mask_header("Authorization", &format!("Bearer {JWT}")),
            format!("Bearer eyJhbGci… [{} chars]", JWT.len())
        );
        assert_eq!(
            mask_header("proxy-authorization", "Basic dXNlcjpwYXNz"),
            "Basic dXN… [12 chars]"
        );
        assert_eq!(mask_header("authorization", "opaque"), "o… [6 chars]");
        assert_eq!(mask_header("authorization", ""), "");
    }

    #[test]
    fn cookies_keep_their_names_and_attributes() {
        assert_eq!(
            mask_header("Cookie", "session=abcdefghijklmnop; theme=dark"),
            "session=abcd… [16 chars]; theme=d… [4 chars]"
        );
        assert_eq!(
            mask_header("set-cookie", "id=0123456789abcdef0123; Path=/; HttpOnly"),
            "id=01234… [20 chars]; Path=/; HttpOnly"
        );
    }

    #[test]
    fn names_that_suggest_a_secret_are_masked_and_others_are_not() {
        for name in [
            "x-api-key",
            "X-Auth-Token",
            "stripe-signature",
            "x-hub-signature-256",
            "x-webhook-secret",
            "x-password",
        ] {
            assert!(is_secret(name), "{name}");
            assert_eq!(mask_header(name, "0123456789abcdef"), "0123… [16 chars]");
        }
        for name in ["content-type", "host", "x-request-id", "user-agent"] {
            assert!(!is_secret(name), "{name}");
            assert_eq!(mask_header(name, "kept as is"), "kept as is");
        }
        // Multi-byte characters are counted and cut as characters.
        assert_eq!(mask("ééééééééé"), "éé… [9 chars]");
    }
}
