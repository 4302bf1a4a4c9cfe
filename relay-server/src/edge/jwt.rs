//! Placeholder until the JWKS-backed verifier lands: fails closed.

use relay_shared::edge::JwtRule;

#[derive(Debug, thiserror::Error)]
pub enum JwtRejection {
    #[error("JWT verification is not available on this server")]
    Unavailable,
}

#[derive(Default)]
pub struct JwtVerifier;

impl JwtVerifier {
    pub fn new() -> Self {
        Self
    }

    pub async fn verify(
        &self,
        _rule: &JwtRule,
        _authorization: Option<&http::HeaderValue>,
    ) -> Result<(), JwtRejection> {
        Err(JwtRejection::Unavailable)
    }
}
