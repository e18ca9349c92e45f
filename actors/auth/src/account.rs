//! Accounts and their secrets.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};
use serde::{Deserialize, Serialize};

/// Whether an account is a person's or a service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AccountType {
    /// A person.
    #[default]
    User,
    /// A service.
    Service,
}

/// An account (Go Micro's `auth.Account`). What [`Auth::inspect`](crate::Auth::inspect) returns
/// carries no secret; what the store keeps carries its hash only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account {
    /// Unique id (a user name, a service name).
    pub id: String,
    /// User or service.
    #[serde(rename = "type")]
    pub kind: AccountType,
    /// Who issued it (the auth's issuer name).
    pub issuer: String,
    /// Free metadata.
    pub metadata: BTreeMap<String, String>,
    /// Scopes, matched against rules' scopes.
    pub scopes: Vec<String>,
    /// The secret: given to [`Auth::generate`](crate::Auth::generate) in clear, stored hashed,
    /// empty in what [`Auth::inspect`](crate::Auth::inspect) returns.
    pub secret: String,
}

impl Account {
    /// The same account without its secret.
    #[must_use]
    pub fn without_secret(mut self) -> Self {
        self.secret.clear();
        self
    }
}

/// Options of [`Auth::generate`](crate::Auth::generate).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerateOptions {
    /// User or service.
    pub kind: AccountType,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The secret; a random one when empty (returned in the account).
    pub secret: String,
}

impl GenerateOptions {
    /// No scopes, a user, a random secret.
    pub fn new() -> Self {
        GenerateOptions::default()
    }

    /// With these scopes.
    #[must_use]
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// A service account.
    #[must_use]
    pub fn service(mut self) -> Self {
        self.kind = AccountType::Service;
        self
    }

    /// With this secret.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = secret.into();
        self
    }

    /// With a metadata entry.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// PBKDF2-HMAC-SHA256 iterations (OWASP's 2023 figure for this PRF).
const ITERATIONS: u32 = 600_000;
const SALT: usize = 16;

/// A secret's stored form: `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`.
pub(crate) fn hash_secret(secret: &str, iterations: u32) -> String {
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT];
    // SystemRandom fails only when the OS has no randomness; a zero salt is then still a hash.
    let _ = rng.fill(&mut salt);
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    let mut out = [0u8; digest::SHA256_OUTPUT_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        secret.as_bytes(),
        &mut out,
    );
    format!("pbkdf2-sha256${iterations}${}${}", hex(&salt), hex(&out))
}

/// Whether `secret` is the one `stored` was made from (constant time).
pub(crate) fn check_secret(secret: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(iterations), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(iterations), Some(salt), Some(hash)) = (
        iterations.parse().ok().and_then(NonZeroU32::new),
        unhex(salt),
        unhex(hash),
    ) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        secret.as_bytes(),
        &hash,
    )
    .is_ok()
}

/// The default iteration count (tests use fewer through the config).
pub(crate) const fn default_iterations() -> u32 {
    ITERATIONS
}

/// A random secret: 32 bytes, hex.
pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    let _ = SystemRandom::new().fill(&mut bytes);
    hex(&bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hashed_salted_and_checked() {
        let a = hash_secret("hunter2", 1_000);
        let b = hash_secret("hunter2", 1_000);
        assert_ne!(a, b, "salted");
        assert!(!a.contains("hunter2"));
        assert!(check_secret("hunter2", &a));
        assert!(!check_secret("hunter3", &a));
        assert!(!check_secret("hunter2", "garbage"));
        assert!(!check_secret("hunter2", "pbkdf2-sha256$0$00$00"));
    }
}
