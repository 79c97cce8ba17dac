//! Each tool's own way of signing a body, as the tool does it.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Heroku: base64(HMAC-SHA256(secret, body)).
pub fn heroku(secret: &str, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// Flux generic-hmac: `sha256=<hex HMAC-SHA256(token, body)>`.
pub fn flux(secret: &str, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body.as_bytes());
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Vercel: hex(HMAC-SHA1(secret, body)).
pub fn vercel(secret: &str, body: &str) -> String {
    let mut m = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Netlify: a JWS (HS256) with `iss: netlify` and the body's SHA-256.
pub fn netlify(secret: &str, body: &str) -> String {
    let claims = serde_json::json!({"iss": "netlify", "sha256": hex::encode(Sha256::digest(body.as_bytes()))});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
