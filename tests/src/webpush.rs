//! [`PushSubscriber`]: the browser's half of a Web Push subscription, for tests.
//!
//! It holds the subscription's P-256 key pair and auth secret, and decrypts what
//! a push service received (RFC 8291 over RFC 8188 `aes128gcm`) and checks its
//! VAPID header (RFC 8292) with RustCrypto primitives directly, independently of
//! the crate the hub encrypts with, so a hub bug cannot hide behind a shared one.

use aes_gcm::aead::{Aead as _, KeyInit as _};
use hkdf::Hkdf;
use p256::ecdsa::signature::Verifier as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use peerhub_protocol::encoding::{b64, unb64};
use sha2::Sha256;

/// A browser's push subscription keys.
#[derive(Debug, Clone)]
pub struct PushSubscriber {
    secret: p256::SecretKey,
    /// The 16-byte auth secret.
    pub auth: [u8; 16],
}

/// What a VAPID JWT claimed.
#[derive(Debug, Clone)]
pub struct VapidClaims {
    /// `aud`
    pub aud: String,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
    /// `sub`
    pub sub: String,
}

impl Default for PushSubscriber {
    fn default() -> Self {
        Self::generate()
    }
}

impl PushSubscriber {
    /// Fresh keys.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        let secret = loop {
            getrandom::fill(&mut seed).expect("randomness");
            if let Ok(secret) = p256::SecretKey::from_slice(&seed) {
                break secret;
            }
        };
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).expect("randomness");
        Self { secret, auth }
    }

    /// The uncompressed public point (65 bytes).
    pub fn public_bytes(&self) -> Vec<u8> {
        self.secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// `p256dh` as a browser reports it (base64url).
    pub fn p256dh(&self) -> String {
        b64(&self.public_bytes())
    }

    /// `auth` as a browser reports it (base64url).
    pub fn auth_b64(&self) -> String {
        b64(&self.auth)
    }

    /// Decrypts an `aes128gcm` push body (one record), as the browser would.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let salt = body.get(..16).ok_or("no salt")?;
        let rs = u32::from_be_bytes(
            body.get(16..20)
                .ok_or("no rs")?
                .try_into()
                .map_err(|_| "rs")?,
        );
        let idlen = *body.get(20).ok_or("no idlen")? as usize;
        let as_public = body.get(21..21 + idlen).ok_or("no keyid")?;
        let ciphertext = body.get(21 + idlen..).ok_or("no ciphertext")?;
        if idlen != 65 {
            return Err(format!("keyid is {idlen} bytes, not a P-256 point"));
        }
        if ciphertext.len() > rs as usize {
            return Err("more than one record".into());
        }
        let server_key =
            p256::PublicKey::from_sec1_bytes(as_public).map_err(|_| "keyid is not a point")?;
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), server_key.as_affine());
        // RFC 8291 §3.4: IKM from the ECDH secret and the auth secret.
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend_from_slice(&self.public_bytes());
        key_info.extend_from_slice(as_public);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes().as_slice())
            .expand(&key_info, &mut ikm)
            .map_err(|_| "hkdf")?;
        // RFC 8188 §2.2–2.3: content key and nonce from the salt.
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let mut cek = [0u8; 16];
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .map_err(|_| "hkdf")?;
        let mut nonce = [0u8; 12];
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
            .map_err(|_| "hkdf")?;
        let cipher = aes_gcm::Aes128Gcm::new_from_slice(&cek).map_err(|_| "key")?;
        let mut plain = cipher
            .decrypt(aes_gcm::Nonce::from_slice(&nonce), ciphertext)
            .map_err(|_| "the record does not decrypt")?;
        // Padding: zeros, after the last record's delimiter 0x02.
        while plain.last() == Some(&0) {
            plain.pop();
        }
        if plain.pop() != Some(2) {
            return Err("no last-record delimiter".into());
        }
        Ok(plain)
    }
}

/// Checks an `Authorization: vapid t=…, k=…` header: `k` is `public_key`
/// (base64url), the JWT is ES256 and verifies with it. Returns its claims.
pub fn check_vapid(header: &str, public_key: &str) -> Result<VapidClaims, String> {
    let rest = header.strip_prefix("vapid ").ok_or("not a vapid header")?;
    let mut token = None;
    let mut key = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(t) = part.strip_prefix("t=") {
            token = Some(t);
        } else if let Some(k) = part.strip_prefix("k=") {
            key = Some(k);
        }
    }
    let (token, key) = (token.ok_or("no t=")?, key.ok_or("no k=")?);
    if key != public_key {
        return Err("k is not the hub's VAPID key".into());
    }
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&unb64(key).map_err(|_| "k")?)
        .map_err(|_| "k is not a point")?;
    let mut parts = token.split('.');
    let (header_b64, claims_b64, sig_b64) = (
        parts.next().ok_or("jwt")?,
        parts.next().ok_or("jwt")?,
        parts.next().ok_or("jwt")?,
    );
    let jwt_header: serde_json::Value =
        serde_json::from_slice(&unb64(header_b64).map_err(|_| "header")?).map_err(|_| "header")?;
    if jwt_header["alg"] != "ES256" {
        return Err(format!("alg is {}", jwt_header["alg"]));
    }
    let signature = p256::ecdsa::Signature::from_slice(&unb64(sig_b64).map_err(|_| "sig")?)
        .map_err(|_| "sig is not r||s")?;
    verifying
        .verify(format!("{header_b64}.{claims_b64}").as_bytes(), &signature)
        .map_err(|_| "the JWT signature does not verify")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&unb64(claims_b64).map_err(|_| "claims")?).map_err(|_| "claims")?;
    Ok(VapidClaims {
        aud: claims["aud"].as_str().unwrap_or_default().to_string(),
        exp: claims["exp"].as_u64().unwrap_or_default(),
        sub: claims["sub"].as_str().unwrap_or_default().to_string(),
    })
}
