//! Who is calling. The operator presents the operator token as a bearer
//! token; it is compared by SHA-256 digest in constant time, so neither its
//! length nor a matching prefix shows in the response time.

use super::AppState;
use super::error::ApiError;
use axum::extract::FromRequestParts;
use http::request::Parts;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

/// The operator token's digest, as `AppState` keeps it.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Proof that the request carries the operator token.
#[derive(Debug)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("send the operator token as a bearer token"))?;
        if bool::from(digest(presented).ct_eq(&state.operator_token)) {
            Ok(Operator)
        } else {
            Err(ApiError::unauthorized(
                "the token is not the operator token",
            ))
        }
    }
}
