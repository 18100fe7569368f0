//! Who is calling: the identity read from a verified client certificate (subject CN, SAN DNS
//! names and URIs, as step-ca issues them).

/// Who is calling, from the client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Subject common name.
    pub common_name: Option<String>,
    /// SAN DNS names and URIs.
    pub sans: Vec<String>,
}

impl ClientIdentity {
    /// The name used in logs: the CN, or the first SAN.
    pub fn name(&self) -> Option<&str> {
        self.common_name
            .as_deref()
            .or_else(|| self.sans.first().map(String::as_str))
    }

    /// Whether any of the identity's names is in `allowed`.
    pub fn is_any_of(&self, allowed: &[String]) -> bool {
        allowed.iter().any(|a| {
            self.common_name.as_deref() == Some(a.as_str()) || self.sans.iter().any(|s| s == a)
        })
    }

    /// Reads CN and SANs from a DER certificate.
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                    x509_parser::extensions::GeneralName::URI(u) => sans.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        Some(ClientIdentity { common_name, sans })
    }
}
