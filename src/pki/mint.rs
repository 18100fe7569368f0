//! Leaf certificates for `CONNECT` targets, minted on the fly and signed by the interception CA
//! (ECDSA P-256, valid 24 hours, EKU serverAuth, SAN = the target host). Minting costs a key
//! generation and a signature, so leaves are cached: a bounded LRU keyed by host, with
//! single-flight minting (concurrent tunnels to a new host wait for one signature), and a
//! leaf is re-minted when it is over half its lifetime old.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

/// Lifetime of a minted leaf.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Leaves kept in the cache.
pub const CACHE_CAPACITY: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

struct Entry {
    cell: Arc<OnceCell<Arc<CertifiedKey>>>,
    created: Instant,
}

/// Mints and caches leaves.
pub struct Minter {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    /// Least recently used first out.
    cache: Mutex<LruCache<String, Entry>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter").finish_non_exhaustive()
    }
}

impl Minter {
    /// Loads the interception CA.
    ///
    /// # Errors
    /// Unreadable files, a certificate that is not PEM, a key that does not parse.
    pub fn load(ca_cert: &Path, ca_key: &Path) -> Result<Minter, String> {
        Self::load_with_capacity(ca_cert, ca_key, CACHE_CAPACITY)
    }

    /// As [`Minter::load`], caching at most `capacity` leaves.
    ///
    /// # Errors
    /// As [`Minter::load`].
    pub fn load_with_capacity(
        ca_cert: &Path,
        ca_key: &Path,
        capacity: NonZeroUsize,
    ) -> Result<Minter, String> {
        let pem = std::fs::read_to_string(ca_cert)
            .map_err(|e| format!("cannot read {}: {e}", ca_cert.display()))?;
        let key_pem = Zeroizing::new(
            std::fs::read_to_string(ca_key)
                .map_err(|e| format!("cannot read {}: {e}", ca_key.display()))?,
        );
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|_| format!("{} is not a usable private key", ca_key.display()))?;
        let ca_der = super::pem::certs(pem.as_bytes())
            .ok()
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| format!("{} holds no certificate", ca_cert.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&pem, key)
            .map_err(|e| format!("{}: {e}", ca_cert.display()))?;
        Ok(Minter {
            issuer,
            ca_der,
            cache: Mutex::new(LruCache::new(capacity)),
        })
    }

    /// The leaf for `host` (lower case), from the cache or freshly minted.
    ///
    /// # Errors
    /// When signing fails.
    pub async fn leaf_for(&self, host: &str) -> Result<Arc<CertifiedKey>, String> {
        let cell = {
            let mut cache = self
                .cache
                .lock()
                .map_err(|_| "leaf cache poisoned".to_string())?;
            let now = Instant::now();
            let fresh = |e: &Entry| now.duration_since(e.created) <= LEAF_LIFETIME / 2;
            match cache.get(host).filter(|e| fresh(e)) {
                Some(e) => e.cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    let entry = Entry {
                        cell: Arc::clone(&cell),
                        created: now,
                    };
                    // Replaces a stale entry, or evicts the least recently used one when full.
                    cache.put(host.to_owned(), entry);
                    cell
                }
            }
        };
        cell.get_or_try_init(|| async { self.mint(host).map(Arc::new) })
            .await
            .cloned()
    }

    fn mint(&self, host: &str) -> Result<CertifiedKey, String> {
        let key = KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, host);
        params.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string()
                    .try_into()
                    .map_err(|_| format!("`{host}` is not a DNS name"))?,
            ),
        }];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::seconds(LEAF_LIFETIME.as_secs() as i64);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("signing a leaf for `{host}`: {e}"))?;
        let key_der = Zeroizing::new(key.serialize_der());
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key_der.to_vec(),
            )))
            .map_err(|e| format!("loading a minted key: {e}"))?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.ca_der.clone()],
            signing_key,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn leaves_are_cached_least_recently_used_first_out() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::init(dir.path(), crate::pki::InitOptions::default()).unwrap();
        let two = NonZeroUsize::new(2).unwrap();
        let minter = Minter::load_with_capacity(
            &dir.path().join(crate::pki::INTERCEPT_CA_CERT),
            &dir.path().join(crate::pki::INTERCEPT_CA_KEY),
            two,
        )
        .unwrap();
        let a = minter.leaf_for("a.example").await.unwrap();
        let b = minter.leaf_for("b.example").await.unwrap();
        assert!(
            Arc::ptr_eq(&a, &minter.leaf_for("a.example").await.unwrap()),
            "a cached"
        );
        // `b` is now the least recently used: a third host evicts it, not `a`.
        minter.leaf_for("c.example").await.unwrap();
        assert!(
            Arc::ptr_eq(&a, &minter.leaf_for("a.example").await.unwrap()),
            "a kept"
        );
        assert!(
            !Arc::ptr_eq(&b, &minter.leaf_for("b.example").await.unwrap()),
            "b re-minted"
        );
        assert_eq!(minter.cache.lock().unwrap().len(), 2);
    }
}
