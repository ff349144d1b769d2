//! Client API tokens: HMAC-signed claims bound to one alias and one
//! participant, so the gateway keeps no session table; and the UUIDs that
//! name participants and calls. Must not touch the call tables.

use super::super::ApiError;
use crate::sip::digest::{constant_time_eq, hmac_sha256};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// What a token says: signed, so the gateway keeps no session table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The alias the token was issued for.
    #[serde(rename = "a")]
    pub alias: String,
    /// The participant it identifies.
    #[serde(rename = "p")]
    pub participant: String,
    /// Display name given at request time.
    #[serde(rename = "n")]
    pub display_name: String,
    /// Expiry, unix seconds.
    #[serde(rename = "e")]
    pub expires: u64,
}

/// Signs and checks tokens.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token in the request.
    Missing,
    /// Not a token this gateway signed.
    Invalid,
    /// Past its expiry.
    Expired,
    /// Signed for another alias.
    WrongAlias,
    /// Released by its holder.
    Released,
}

impl TokenError {
    fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => "a token is required (token header or Authorization: Bearer)",
            TokenError::Invalid => "invalid token",
            TokenError::Expired => "token expired",
            TokenError::WrongAlias => "the token was issued for another alias",
            TokenError::Released => "token released",
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, e.reason())
    }
}

impl TokenKey {
    /// A fresh random key: tokens do not survive a restart.
    pub fn random() -> Self {
        Self(rand::random())
    }

    fn tag(&self, body: &str) -> String {
        B64.encode(hmac_sha256(&self.0, body.as_bytes()))
    }

    /// `base64url(claims JSON) "." base64url(HMAC-SHA256)`.
    pub fn sign(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = self.tag(&body);
        format!("{body}.{tag}")
    }

    /// Checks signature, expiry and alias.
    pub fn verify(&self, token: &str, alias: &str, now: u64) -> Result<Claims, TokenError> {
        let (body, tag) = token.split_once('.').ok_or(TokenError::Invalid)?;
        if !constant_time_eq(tag, &self.tag(body)) {
            return Err(TokenError::Invalid);
        }
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Invalid)?;
        if claims.expires <= now {
            return Err(TokenError::Expired);
        }
        if claims.alias != alias {
            return Err(TokenError::WrongAlias);
        }
        Ok(claims)
    }
}

/// A random version-4 UUID, as text.
pub fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_alias_and_lifetime() {
        let k = TokenKey::random();
        let claims = Claims {
            alias: "echo".into(),
            participant: uuid(),
            display_name: "Ann".into(),
            expires: 1000,
        };
        let t = k.sign(&claims);
        assert_eq!(k.verify(&t, "echo", 999), Ok(claims));
        assert_eq!(k.verify(&t, "echo", 1000), Err(TokenError::Expired));
        assert_eq!(k.verify(&t, "room1", 999), Err(TokenError::WrongAlias));
        assert_eq!(
            TokenKey::random().verify(&t, "echo", 999),
            Err(TokenError::Invalid)
        );
        // A changed claim breaks the signature.
        let (body, tag) = t.split_once('.').unwrap();
        let forged = B64.encode(
            String::from_utf8(B64.decode(body).unwrap())
                .unwrap()
                .replace("1000", "9999"),
        );
        assert_eq!(
            k.verify(&format!("{forged}.{tag}"), "echo", 999),
            Err(TokenError::Invalid)
        );
        for junk in ["", ".", "a.b", "no-dot", "!!!.???"] {
            assert_eq!(
                k.verify(junk, "echo", 0),
                Err(TokenError::Invalid),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, uuid());
    }
}
