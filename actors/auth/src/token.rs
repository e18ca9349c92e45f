//! Tokens: JWTs signed with Ed25519 (`alg` `EdDSA`, `kid` naming the key), and the
//! [`Verifier`] that checks them without I/O (keys, revocations and rules passed in).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::account::hex;
use crate::{Account, AccountType, AuthError, Rule};

/// An access token and the refresh token that renews it (Go Micro's `auth.Token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Carried by calls (`Authorization: Bearer <access_token>`).
    pub access_token: String,
    /// Exchanged for a new pair by [`Auth::refresh`](crate::Auth::refresh).
    pub refresh_token: String,
    /// When it was made, Unix milliseconds.
    pub created_ms: u64,
    /// When the access token expires, Unix milliseconds.
    pub expiry_ms: u64,
}

impl Token {
    /// Whether the access token expires within `margin_ms` of `now_ms`.
    pub fn expires_within(&self, now_ms: u64, margin_ms: u64) -> bool {
        self.expiry_ms <= now_ms.saturating_add(margin_ms)
    }
}

/// A public key as published in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PublicKey {
    pub(crate) issuer: String,
    /// The raw 32 bytes, hex.
    pub(crate) key: String,
}

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) sub: String,
    pub(crate) iss: String,
    /// Seconds, as JWT has it (readers elsewhere); micro checks `exp_ms`.
    pub(crate) exp: u64,
    pub(crate) iat: u64,
    pub(crate) exp_ms: u64,
    pub(crate) iat_ms: u64,
    /// `"access"` or `"refresh"`.
    pub(crate) typ: String,
    #[serde(rename = "type")]
    pub(crate) kind: AccountType,
    pub(crate) scopes: Vec<String>,
    pub(crate) metadata: std::collections::BTreeMap<String, String>,
}

pub(crate) const ACCESS: &str = "access";
pub(crate) const REFRESH: &str = "refresh";

/// A node's signing key.
pub(crate) struct Signer {
    pub(crate) kid: String,
    encoding: EncodingKey,
    pub(crate) public: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new key, kept in memory only.
    pub(crate) fn generate() -> Result<Signer, AuthError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| AuthError::Key {
                path: "memory".into(),
                detail: "cannot generate an Ed25519 key".into(),
            })?;
        Signer::from_pkcs8(pkcs8.as_ref(), "memory")
    }

    /// The key in `path` (PKCS#8 DER), made there (mode 0600) if the file does not exist.
    pub(crate) fn load_or_create(path: &Path) -> Result<Signer, AuthError> {
        let err = |detail: String| AuthError::Key {
            path: path.display().to_string(),
            detail,
        };
        match fs::read(path) {
            Ok(bytes) => Signer::from_pkcs8(&bytes, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| err("cannot generate an Ed25519 key".into()))?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
                file.write_all(pkcs8.as_ref())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Signer::from_pkcs8(pkcs8.as_ref(), &path.display().to_string())
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn from_pkcs8(pkcs8: &[u8], path: &str) -> Result<Signer, AuthError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| AuthError::Key {
            path: path.to_owned(),
            detail: format!("not an Ed25519 PKCS#8 key: {e}"),
        })?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(Signer {
            kid: key_id(&public),
            encoding: EncodingKey::from_ed_der(pkcs8),
            public,
        })
    }

    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| AuthError::Key {
            path: self.kid.clone(),
            detail: e.to_string(),
        })
    }
}

/// A key's id: the first 8 bytes of the SHA-256 of the public key, hex.
pub(crate) fn key_id(public: &[u8]) -> String {
    hex(&digest::digest(&digest::SHA256, public).as_ref()[..8])
}

/// Verified tokens kept, at most.
pub(crate) const CACHE_CAPACITY: usize = 10_000;

struct Cached {
    account: Account,
    exp_ms: u64,
    iat_ms: u64,
}

/// Checks tokens against the keys, revocations and rules it was given; keeps verified tokens in a
/// bounded cache, still checked against expiry and revocation at every hit.
pub(crate) struct Verifier {
    keys: HashMap<String, DecodingKey>,
    revoked: HashMap<String, u64>,
    pub(crate) rules: Vec<Rule>,
    cache: HashMap<String, Cached>,
    capacity: usize,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("revoked", &self.revoked.len())
            .field("rules", &self.rules.len())
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl Verifier {
    pub(crate) fn new(capacity: usize) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is checked in milliseconds against the `now` given (testable, no leeway).
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        Verifier {
            keys: HashMap::new(),
            revoked: HashMap::new(),
            rules: crate::rules::default_rules(),
            cache: HashMap::new(),
            capacity: capacity.max(1),
            validation,
        }
    }

    /// Replaces the known public keys (kid → raw key).
    pub(crate) fn set_keys(&mut self, keys: impl IntoIterator<Item = (String, Vec<u8>)>) {
        self.keys = keys
            .into_iter()
            .map(|(kid, key)| (kid, DecodingKey::from_ed_der(&key)))
            .collect();
        // A key withdrawn: its tokens must not stay valid through the cache.
        self.cache.clear();
    }

    /// Replaces the revocations (account id → revoked at, Unix ms).
    pub(crate) fn set_revoked(&mut self, revoked: HashMap<String, u64>) {
        self.revoked = revoked;
    }

    /// The account an access token names, if the token is valid at `now_ms`.
    pub(crate) fn inspect(&mut self, token: &str, now_ms: u64) -> Option<Account> {
        if let Some(hit) = self.cache.get(token) {
            if hit.exp_ms > now_ms && !self.is_revoked(&hit.account.id, hit.iat_ms) {
                return Some(hit.account.clone());
            }
            self.cache.remove(token);
            return None;
        }
        let claims = self.check(token, ACCESS, now_ms)?;
        let account = account_of(&claims);
        if self.cache.len() >= self.capacity {
            // Bounded: drop what expired, and everything if that was not enough.
            self.cache.retain(|_, c| c.exp_ms > now_ms);
            if self.cache.len() >= self.capacity {
                self.cache.clear();
            }
        }
        self.cache.insert(
            token.to_owned(),
            Cached {
                account: account.clone(),
                exp_ms: claims.exp_ms,
                iat_ms: claims.iat_ms,
            },
        );
        Some(account)
    }

    /// A token's claims if it is signed by a known key, of type `typ`, unexpired, unrevoked.
    pub(crate) fn check(&self, token: &str, typ: &str, now_ms: u64) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = self.keys.get(header.kid.as_deref()?)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).ok()?;
        let claims = data.claims;
        (claims.typ == typ
            && claims.exp_ms > now_ms
            && !self.is_revoked(&claims.sub, claims.iat_ms))
        .then_some(claims)
    }

    /// The revocations known.
    pub(crate) fn revoked(&self) -> &HashMap<String, u64> {
        &self.revoked
    }

    fn is_revoked(&self, id: &str, iat_ms: u64) -> bool {
        self.revoked.get(id).is_some_and(|at| iat_ms <= *at)
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.len()
    }
}

pub(crate) fn account_of(claims: &Claims) -> Account {
    Account {
        id: claims.sub.clone(),
        kind: claims.kind,
        issuer: claims.iss.clone(),
        metadata: claims.metadata.clone(),
        scopes: claims.scopes.clone(),
        secret: String::new(),
    }
}

pub(crate) fn claims_for(account: &Account, typ: &str, now_ms: u64, ttl_ms: u64) -> Claims {
    let exp_ms = now_ms.saturating_add(ttl_ms);
    Claims {
        sub: account.id.clone(),
        iss: account.issuer.clone(),
        exp: exp_ms / 1000,
        iat: now_ms / 1000,
        exp_ms,
        iat_ms: now_ms,
        typ: typ.to_owned(),
        kind: account.kind,
        scopes: account.scopes.clone(),
        metadata: account.metadata.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ada() -> Account {
        Account {
            id: "ada".into(),
            issuer: "micro".into(),
            scopes: vec!["admin".into()],
            ..Account::default()
        }
    }

    fn setup() -> (Signer, Verifier) {
        let signer = Signer::generate().expect("key");
        let mut verifier = Verifier::new(16);
        verifier.set_keys([(signer.kid.clone(), signer.public.clone())]);
        (signer, verifier)
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_signed_token_names_its_account() {
        let (signer, mut verifier) = setup();
        let token = signer
            .sign(&claims_for(&ada(), ACCESS, NOW, 60_000))
            .expect("sign");
        assert_eq!(verifier.inspect(&token, NOW + 1), Some(ada()));
        assert_eq!(verifier.cached(), 1);
        assert_eq!(verifier.inspect(&token, NOW + 2), Some(ada()));
    }

    #[test]
    fn bad_tokens_name_no_account() {
        let (signer, mut verifier) = setup();
        let token = signer
            .sign(&claims_for(&ada(), ACCESS, NOW, 60_000))
            .expect("sign");
        // Missing, malformed.
        assert_eq!(verifier.inspect("", NOW), None);
        assert_eq!(verifier.inspect("not.a.jwt", NOW), None);
        // Tampered: the payload changed, the signature kept.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = signer
            .sign(&Claims {
                scopes: vec!["root".into()],
                ..claims_for(&ada(), ACCESS, NOW, 60_000)
            })
            .expect("sign");
        let forged_payload = forged.split('.').nth(1).expect("payload");
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(verifier.inspect(&tampered, NOW), None);
        // Expired.
        assert_eq!(verifier.inspect(&token, NOW + 60_000), None);
        // Foreign-signed.
        let foreign = Signer::generate().expect("key");
        let token = foreign
            .sign(&claims_for(&ada(), ACCESS, NOW, 60_000))
            .expect("sign");
        assert_eq!(verifier.inspect(&token, NOW), None);
        // A refresh token is not an access token.
        let token = signer
            .sign(&claims_for(&ada(), REFRESH, NOW, 60_000))
            .expect("sign");
        assert_eq!(verifier.inspect(&token, NOW), None);
    }

    #[test]
    fn the_cache_honours_expiry_and_revocation() {
        let (signer, mut verifier) = setup();
        let token = signer
            .sign(&claims_for(&ada(), ACCESS, NOW, 1_000))
            .expect("sign");
        assert!(verifier.inspect(&token, NOW).is_some());
        assert_eq!(
            verifier.inspect(&token, NOW + 1_000),
            None,
            "expired in the cache"
        );
        let token = signer
            .sign(&claims_for(&ada(), ACCESS, NOW, 60_000))
            .expect("sign");
        assert!(verifier.inspect(&token, NOW).is_some());
        verifier.set_revoked(HashMap::from([("ada".to_owned(), NOW + 5)]));
        assert_eq!(
            verifier.inspect(&token, NOW + 10),
            None,
            "revoked in the cache"
        );
        // A token issued after the revocation (the account made again) is valid.
        let token = signer
            .sign(&claims_for(&ada(), ACCESS, NOW + 6, 60_000))
            .expect("sign");
        assert!(verifier.inspect(&token, NOW + 10).is_some());
    }

    #[test]
    fn the_cache_is_bounded() {
        let (signer, mut verifier) = setup();
        for i in 0..40 {
            let token = signer
                .sign(&claims_for(&ada(), ACCESS, NOW + i, 60_000))
                .expect("sign");
            assert!(verifier.inspect(&token, NOW + 40).is_some());
            assert!(verifier.cached() <= 16);
        }
    }

    #[test]
    fn key_files_are_made_owner_only_and_read_back() {
        let dir = std::env::temp_dir().join(format!("micro-auth-key-{}", std::process::id()));
        let path = dir.join("signing.key");
        let _ = fs::remove_file(&path);
        let made = Signer::load_or_create(&path).expect("made");
        let read = Signer::load_or_create(&path).expect("read");
        assert_eq!(made.kid, read.kid);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
