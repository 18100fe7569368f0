//! Leaf certificates for `CONNECT` targets, minted on the fly and signed by the interception CA
//! (ECDSA P-256, valid 24 hours, EKU serverAuth, SAN = the target host). Minting costs a key
//! generation and a signature, so leaves are cached: a bounded LRU keyed by host, with
//! single-flight minting (concurrent tunnels to a new host wait for one signature), and a
//! leaf is re-minted when it is over half its lifetime old.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
pub const CACHE_CAPACITY: usize = 1024;

struct Entry {
    cell: Arc<OnceCell<Arc<CertifiedKey>>>,
    created: Instant,
    last_used: Instant,
}

/// Mints and caches leaves.
pub struct Minter {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    cache: Mutex<HashMap<String, Entry>>,
    capacity: usize,
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
            cache: Mutex::new(HashMap::new()),
            capacity: CACHE_CAPACITY,
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
            let stale = cache
                .get(host)
                .is_some_and(|e| now.duration_since(e.created) > LEAF_LIFETIME / 2);
            if stale {
                cache.remove(host);
            }
            if !cache.contains_key(host) && cache.len() >= self.capacity {
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&oldest);
                }
            }
            let entry = cache.entry(host.to_owned()).or_insert_with(|| Entry {
                cell: Arc::new(OnceCell::new()),
                created: now,
                last_used: now,
            });
            entry.last_used = now;
            entry.cell.clone()
        };
        cell.get_or_try_init(|| async { self.mint(host).map(Arc::new) })
            .await
            .cloned()
    }

    /// Number of cached leaves.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
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
