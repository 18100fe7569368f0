//! Listener TLS: the server certificate, client-certificate verification (mTLS) and the client
//! identity ([`ClientIdentity`]), all reloadable without dropping established connections.
//!
//! - [`ReloadableCert`] resolves the server certificate from an atomically swapped slot.
//! - [`ReloadableVerifier`] verifies client certificates against an atomically swapped set of
//!   roots (the `client_ca` bundle). rustls checks the chain, the validity period and the
//!   `clientAuth` extended key usage; a server-auth-only certificate is refused.
//! - [`IdentityCallback`] reads the verified leaf after the handshake: its subject CN and its
//!   SAN DNS names and URIs (as step-ca issues them) become the connection's [`ClientIdentity`].
//!
//! [`ListenerTlsState::reload`] re-reads the files; a bad new certificate is refused (logged)
//! and the old one keeps serving. New handshakes see the new files; established connections
//! keep the session they negotiated.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::config::ListenerTls;
use crate::pki::pem::{load_certified_key, load_client_verifier, TlsLoadError};
use crate::pki::ClientIdentity;

/// The server certificate, swappable.
#[derive(Debug)]
pub struct ReloadableCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The client verifier, swappable.
#[derive(Debug)]
pub struct ReloadableVerifier(ArcSwap<Arc<dyn ClientCertVerifier>>);

impl ClientCertVerifier for ReloadableVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would have to borrow from the swapped verifier; they are optional in TLS and
        // clients configured with one certificate send it regardless.
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let r = self
            .0
            .load()
            .verify_client_cert(end_entity, intermediates, now);
        if r.is_err() {
            crate::metrics::mtls_failure();
        }
        r
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.load().supported_verify_schemes()
    }
}

/// Stores the client identity in the connection's TLS digest after the handshake.
pub struct IdentityCallback;

#[async_trait]
impl TlsAccept for IdentityCallback {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        let id = ClientIdentity::from_der(der)?;
        Some(Arc::new(id))
    }
}

/// The reloadable TLS state of one listener.
pub struct ListenerTlsState {
    pub name: String,
    files: ListenerTls,
    cert: Arc<ReloadableCert>,
    verifier: Option<Arc<ReloadableVerifier>>,
    mtimes: std::sync::Mutex<Vec<Option<SystemTime>>>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl ListenerTlsState {
    /// Loads the listener's files.
    ///
    /// # Errors
    /// As [`load_certified_key`] and [`load_client_verifier`].
    pub fn load(name: &str, files: &ListenerTls) -> Result<Arc<Self>, TlsLoadError> {
        let ck = load_certified_key(&files.cert, &files.key)?;
        let verifier = match &files.client_ca {
            Some(ca) => Some(Arc::new(ReloadableVerifier(ArcSwap::from_pointee(
                load_client_verifier(ca)?,
            )))),
            None => None,
        };
        let state = ListenerTlsState {
            name: name.to_owned(),
            files: files.clone(),
            cert: Arc::new(ReloadableCert(ArcSwap::from_pointee(ck))),
            verifier,
            mtimes: std::sync::Mutex::new(Vec::new()),
        };
        state.remember_mtimes();
        Ok(Arc::new(state))
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.files.cert.clone(), self.files.key.clone()];
        v.extend(self.files.client_ca.clone());
        v
    }

    fn remember_mtimes(&self) {
        let now: Vec<_> = self.paths().iter().map(|p| mtime(p)).collect();
        if let Ok(mut m) = self.mtimes.lock() {
            *m = now;
        }
    }

    /// Whether any of the files changed since the last (re)load.
    pub fn files_changed(&self) -> bool {
        let now: Vec<_> = self.paths().iter().map(|p| mtime(p)).collect();
        self.mtimes.lock().map(|m| *m != now).unwrap_or(false)
    }

    /// Pingora settings for this listener: the swappable resolver and verifier, the identity
    /// callback, HTTP/2 and HTTP/1.1 by ALPN.
    ///
    /// # Errors
    /// From Pingora's settings constructor.
    pub fn settings(&self) -> pingora::Result<TlsSettings> {
        let mut s = TlsSettings::with_callbacks(Box::new(IdentityCallback))?;
        s.set_cert_resolver(self.cert.clone());
        if let Some(v) = &self.verifier {
            s.set_client_cert_verifier(v.clone());
        }
        s.enable_h2();
        Ok(s)
    }

    /// Re-reads the certificate, key and client CA. On any error nothing is swapped.
    ///
    /// # Errors
    /// What was wrong with the new files; the old ones keep serving.
    pub fn reload(&self) -> Result<(), TlsLoadError> {
        let ck = load_certified_key(&self.files.cert, &self.files.key)?;
        let verifier = match (&self.files.client_ca, &self.verifier) {
            (Some(ca), Some(_)) => Some(load_client_verifier(ca)?),
            _ => None,
        };
        self.cert.0.store(Arc::new(ck));
        if let (Some(new), Some(slot)) = (verifier, &self.verifier) {
            slot.0.store(Arc::new(new));
        }
        self.remember_mtimes();
        Ok(())
    }

    /// Publishes the current certificate's expiry as a metric.
    pub fn record_expiry(&self) {
        let not_after = self.leaf_der().and_then(|der| {
            x509_parser::parse_x509_certificate(&der)
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp())
        });
        if let Some(t) = not_after {
            crate::metrics::certificate_expiry(&self.name, t);
        }
    }

    /// The current server certificate's leaf (DER), for expiry metrics.
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        self.cert.0.load().cert.first().map(|c| c.as_ref().to_vec())
    }
}
