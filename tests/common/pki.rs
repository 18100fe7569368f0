//! A throwaway PKI for end-to-end tests: a root CA, an intermediate that signs every leaf
//! (the same shape step-ca produces), a server certificate, and client certificates on demand.
//!
//! Everything is ECDSA P-256, generated with rcgen when [`TestPki::new`] runs, and written as PEM
//! into the directory it is given:
//!
//! | file               | holds                                                   |
//! |--------------------|---------------------------------------------------------|
//! | `ca.crt`           | the root CA certificate (the trust anchor to configure)  |
//! | `intermediate.crt` | the intermediate CA certificate                         |
//! | `server.crt`       | server leaf, then the intermediate                      |
//! | `server.key`       | the server leaf's PKCS#8 key                            |
//! | `NAME.crt`/`.key`  | each certificate issued later under that `NAME`         |
//!
//! The server certificate is valid for `localhost`, `127.0.0.1` and any extra DNS names passed
//! to [`TestPki::with_names`]. rustls configs built here pin the aws-lc-rs provider explicitly:
//! the main crate's dependency graph enables both of rustls' providers, and then rustls cannot
//! pick a process default on its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// ALPN protocol id for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN protocol id for HTTP/2 over TLS.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider every config here uses (see the module doc for why it is explicit).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate issued by [`TestPki`], with its key, and where both were written.
#[derive(Debug)]
pub struct IssuedCert {
    /// PEM file: the leaf, then the intermediate.
    pub cert_path: PathBuf,
    /// PEM file: the leaf's PKCS#8 private key.
    pub key_path: PathBuf,
    /// The leaf, then the intermediate, in DER.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl IssuedCert {
    /// The private key, in the form rustls takes.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A root CA, an intermediate, and a server certificate, written to a directory.
pub struct TestPki {
    dir: PathBuf,
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    ca_path: PathBuf,
    server: IssuedCert,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").field("dir", &self.dir).finish()
    }
}

impl TestPki {
    /// Generates the PKI into `dir` (created if missing), with a server certificate for
    /// `localhost` and `127.0.0.1`.
    ///
    /// # Panics
    ///
    /// If generation or writing a file fails (test helper).
    pub fn new(dir: &Path) -> TestPki {
        TestPki::with_names(dir, &[])
    }

    /// Like [`TestPki::new`], with `extra_dns` names added to the server certificate.
    ///
    /// # Panics
    ///
    /// If generation or writing a file fails, or a name is not a valid DNS name.
    pub fn with_names(dir: &Path, extra_dns: &[&str]) -> TestPki {
        fs::create_dir_all(dir).expect("create PKI directory");

        let mut root_params = ca_params("SLAPENIR Test Root CA");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(root_params, new_key()).expect("self-sign root");

        let mut int_params = ca_params("SLAPENIR Test Intermediate CA");
        int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        int_params.use_authority_key_identifier_extension = true;
        let intermediate =
            CertifiedIssuer::signed_by(int_params, new_key(), &root).expect("sign intermediate");

        let ca_path = dir.join("ca.crt");
        fs::write(&ca_path, root.pem()).expect("write ca.crt");
        fs::write(dir.join("intermediate.crt"), intermediate.pem()).expect("write intermediate");

        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(extra_dns.iter().map(|n| (*n).to_owned()));
        let server = issue(
            dir,
            &intermediate,
            "server",
            leaf_params("localhost", &names, ExtendedKeyUsagePurpose::ServerAuth),
        );
        TestPki {
            dir: dir.to_owned(),
            root,
            intermediate,
            ca_path,
            server,
        }
    }

    /// `ca.crt`: the root certificate to trust.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The root certificate in DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.root.der().clone()
    }

    /// `server.crt`: the server leaf followed by the intermediate.
    pub fn server_cert_path(&self) -> &Path {
        &self.server.cert_path
    }

    /// `server.key`.
    pub fn server_key_path(&self) -> &Path {
        &self.server.key_path
    }

    /// The server certificate generated by `new`.
    pub fn server(&self) -> &IssuedCert {
        &self.server
    }

    /// Issues another server certificate for `dns_names` (IP addresses allowed), written as
    /// `NAME.crt` / `NAME.key`.
    ///
    /// # Panics
    ///
    /// On an invalid name or a failed write.
    pub fn issue_server(&self, name: &str, dns_names: &[&str]) -> IssuedCert {
        let names: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
        let cn = names.first().map_or(name, String::as_str);
        issue(
            &self.dir,
            &self.intermediate,
            name,
            leaf_params(cn, &names, ExtendedKeyUsagePurpose::ServerAuth),
        )
    }

    /// Issues a client certificate with subject `CN=cn` and, if given, a SAN URI (such as
    /// `spiffe://slapenir/agent-1`), written as `NAME.crt` / `NAME.key`. Its chain runs through
    /// the intermediate to the root, like an agent certificate from step-ca.
    ///
    /// # Panics
    ///
    /// On an invalid URI or a failed write.
    pub fn issue_client(&self, name: &str, cn: &str, san_uri: Option<&str>) -> IssuedCert {
        let mut params = leaf_params(cn, &[], ExtendedKeyUsagePurpose::ClientAuth);
        if let Some(uri) = san_uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().expect("SAN URI is IA5 text")));
        }
        issue(&self.dir, &self.intermediate, name, params)
    }

    /// A rustls server config serving the server certificate, offering `alpn` (in preference
    /// order; empty for none).
    ///
    /// # Panics
    ///
    /// If rustls refuses the certificate (it should not).
    pub fn server_config(&self, alpn: &[&[u8]]) -> ServerConfig {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(self.server.chain.clone(), self.server.key())
            .expect("server certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A TLS acceptor over [`TestPki::server_config`].
    pub fn acceptor(&self, alpn: &[&[u8]]) -> TlsAcceptor {
        TlsAcceptor::from(Arc::new(self.server_config(alpn)))
    }

    /// A rustls client config trusting only this PKI's root, offering `alpn`, and presenting
    /// `client` if given (for mTLS).
    ///
    /// # Panics
    ///
    /// If rustls refuses the certificate (it should not).
    pub fn client_config(&self, client: Option<&IssuedCert>, alpn: &[&[u8]]) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("add root");
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let mut config = match client {
            Some(cert) => builder
                .with_client_auth_cert(cert.chain.clone(), cert.key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A TLS connector over [`TestPki::client_config`].
    pub fn connector(&self, client: Option<&IssuedCert>, alpn: &[&[u8]]) -> TlsConnector {
        TlsConnector::from(Arc::new(self.client_config(client, alpn)))
    }
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate P-256 key")
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(cn: &str, names: &[String], eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::new(names.to_vec()).expect("valid subject names");
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn issue(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    file_stem: &str,
    params: CertificateParams,
) -> IssuedCert {
    let key = new_key();
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    let cert_path = dir.join(format!("{file_stem}.crt"));
    let key_path = dir.join(format!("{file_stem}.key"));
    fs::write(&cert_path, format!("{}{}", cert.pem(), issuer.pem())).expect("write certificate");
    fs::write(&key_path, key.serialize_pem()).expect("write key");
    IssuedCert {
        cert_path,
        key_path,
        chain: vec![cert.der().clone(), issuer.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}
