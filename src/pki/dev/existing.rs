//! Reading an existing development PKI back and checking it (`keep_existing`): every file
//! there, parseable, chained, matching its key, and not expired.

use super::*;

/// The certificates in a PEM file, in order. Errors are reasons, without file contents.
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    certs_in(&fs::read(path).map_err(|e| format!("cannot read: {e}"))?)
}

/// The certificates in PEM text, in order.
pub(super) fn certs_in(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = crate::pki::pem::certs(pem).map_err(|_| "is not valid PEM".to_owned())?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, or SEC1 as step-ca writes it).
pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| format!("cannot read: {e}"))?);
    match crate::pki::pem::private_key(&bytes) {
        Ok(Some(key)) => Ok(key),
        // Never quote the parser's error: it may describe the key's bytes.
        Ok(None) | Err(_) => Err("holds no unencrypted PEM private key".to_owned()),
    }
}

/// A key rcgen can sign with: unencrypted PKCS#8 (what [`init`] writes).
pub(super) fn read_rcgen_key(path: &Path) -> Result<KeyPair, String> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|e| format!("cannot read: {e}"))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| "is not PEM text".to_owned())?;
    KeyPair::from_pem_and_sign_algo(text, &PKCS_ECDSA_P256_SHA256)
        .map_err(|_| "is not an unencrypted PKCS#8 ECDSA P-256 key".to_owned())
}

pub(super) fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| format!("holds a certificate that does not parse: {e}"))
}

pub(super) fn system_time(t: &x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Checks that the files of `entries` in `dir` form one usable PKI at time `now`: each parses,
/// chains to its issuer (root → intermediate → leaves, root → interception CA), leaf files carry
/// the intermediate as their second certificate, each key matches its certificate, and each
/// certificate is valid at `now`. Reports every problem found, not only the first.
pub(super) fn check_existing(
    dir: &Path,
    entries: &[Entry],
    now: SystemTime,
) -> Result<Vec<CertSummary>, PkiError> {
    let mut problems = Vec::new();
    let mut summaries = Vec::new();
    let loaded: Vec<(&Entry, Option<Vec<CertificateDer<'static>>>)> = entries
        .iter()
        .map(|entry| {
            let path = dir.join(&entry.cert);
            match read_certs(&path) {
                Ok(certs) => (entry, Some(certs)),
                Err(reason) => {
                    problems.push((path, reason));
                    (entry, None)
                }
            }
        })
        .collect();
    let cert_of = |role: Role| {
        loaded
            .iter()
            .find(|(e, _)| e.role == role)
            .and_then(|(_, certs)| certs.as_ref())
            .and_then(|certs| certs.first())
    };
    let root = cert_of(Role::Ca(Ca::Root));
    let intermediate = cert_of(Role::Ca(Ca::Intermediate));

    for (entry, certs) in &loaded {
        let Some(certs) = certs else { continue };
        let path = dir.join(&entry.cert);
        let mut problem = |reason: String| problems.push((path.clone(), reason));
        let (issuer, expected_len) = match entry.role {
            Role::Ca(_) => (root, 1),
            Role::Leaf(_) => (intermediate, 2),
        };
        if certs.len() != expected_len {
            problem(format!(
                "holds {} certificates, expected {expected_len}",
                certs.len()
            ));
        }
        if expected_len == 2 && certs.get(1) != intermediate {
            problem(format!(
                "second certificate is not the one in {INTERMEDIATE_CA_CERT}"
            ));
        }
        let parsed = certs
            .first()
            .ok_or_else(|| "holds no certificate".to_owned())
            .and_then(parse);
        let cert = match parsed {
            Ok(cert) => cert,
            Err(reason) => {
                problem(reason);
                continue;
            }
        };
        let at = x509_parser::time::ASN1Time::from_timestamp(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        );
        match at {
            Ok(at) if cert.validity().is_valid_at(at) => {}
            _ => problem(format!(
                "is not valid now (valid from {} to {})",
                cert.validity().not_before,
                cert.validity().not_after
            )),
        }
        // An issuer that is missing or does not parse is reported on its own entry.
        if let Some(Ok(issuer)) = issuer.map(parse)
            && cert.verify_signature(Some(issuer.public_key())).is_err()
        {
            problem(format!("is not signed by {}", issuer.subject()));
        }
        let key_path = dir.join(&entry.key);
        match read_key(&key_path).and_then(|key| {
            rustls::crypto::ring::sign::any_supported_type(&key)
                .map_err(|_| "holds an unsupported private key".to_owned())
        }) {
            Ok(key) => {
                if key.public_key().as_deref() != Some(cert.public_key().raw) {
                    problems.push((key_path, format!("is not the key of {}", entry.cert)));
                }
            }
            Err(reason) => problems.push((key_path, reason)),
        }
        summaries.push(CertSummary {
            path: dir.join(&entry.cert),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: system_time(&cert.validity().not_after),
        });
    }
    if problems.is_empty() {
        Ok(summaries)
    } else {
        Err(PkiError::Unusable {
            problems,
            remedy: "pass --force to replace the whole PKI",
        })
    }
}
