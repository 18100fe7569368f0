//! `Secret`: a real credential value. It prints as `[REDACTED]`, has no `Serialize`, compares in
//! constant time and is zeroized when dropped. Its sources are environment variables and files
//! (Docker secrets under `/run/secrets/...`).
//!
//! Code that needs the bytes calls [`Secret::expose`]; every such call site is a place where a
//! secret leaves this type, so keep them few (the rewriter compiler is the main one).

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A real credential value.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps bytes that are already owned; they are zeroized when the `Secret` is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret's bytes. Never log, format or put them in an error.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (safe to report: it is also visible on the wire).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality with other bytes (lengths are not hidden).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], other).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Where a real value comes from. Safe to print: it names a variable or a path, not a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable, read once per load.
    Env(String),
    /// A file (for example a Docker secret); one trailing newline is removed.
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Why a secret could not be loaded. Never contains the value.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The variable is unset or empty: the credential is *unavailable* but the gateway runs.
    Missing(String),
    /// The file cannot be read, or is empty, or the value is not usable: a configuration error.
    Unreadable(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Missing(m) | LoadError::Unreadable(m) => f.write_str(m),
        }
    }
}

impl SecretSource {
    /// Reads the value. `base` resolves relative file paths (the config file's directory).
    ///
    /// # Errors
    /// [`LoadError::Missing`] when an environment variable is unset or empty;
    /// [`LoadError::Unreadable`] when a file cannot be read, is empty, or either source holds a
    /// value with control characters or spaces (it could not go into a header safely).
    pub fn load(&self) -> Result<Secret, LoadError> {
        let bytes = match self {
            SecretSource::Env(name) => match std::env::var_os(name) {
                None => return Err(LoadError::Missing(format!("{self} is not set"))),
                Some(v) => Zeroizing::new(v.into_encoded_bytes()),
            },
            SecretSource::File(path) => read_secret_file(path)
                .map_err(|e| LoadError::Unreadable(format!("cannot read {self}: {e}")))?,
        };
        let mut bytes = bytes;
        trim_trailing_newline(&mut bytes);
        if bytes.is_empty() {
            return Err(match self {
                SecretSource::Env(_) => LoadError::Missing(format!("{self} is empty")),
                SecretSource::File(_) => LoadError::Unreadable(format!("{self} is empty")),
            });
        }
        if let Some(pos) = bytes
            .iter()
            .position(|b| b.is_ascii_control() || *b == b' ')
        {
            return Err(LoadError::Unreadable(format!(
                "{self} holds a control character or space at byte {pos}; a credential must be \
                 printable without spaces"
            )));
        }
        Ok(Secret(Zeroizing::new(std::mem::take(&mut *bytes))))
    }
}

fn read_secret_file(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    // Read in place so no unzeroized copy is left behind by reallocation of a larger file.
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    buf.reserve(len.min(1 << 20) + 1);
    f.take(1 << 20).read_to_end(&mut buf)?;
    Ok(buf)
}

fn trim_trailing_newline(v: &mut Vec<u8>) {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::type_complexity)]
    use super::*;

    #[test]
    fn redacted_everywhere() {
        let s = Secret::new(b"sk-real-123".to_vec());
        assert_eq!(format!("{s}"), "[REDACTED]");
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([REDACTED])");
        assert!(s.ct_eq(b"sk-real-123"));
        assert!(!s.ct_eq(b"sk-real-124"));
    }

    #[test]
    fn file_source_trims_one_newline_and_rejects_empty() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &[u8], Result<&[u8], ()>)] = &[
            ("plain", b"abc", Ok(b"abc")),
            ("lf", b"abc\n", Ok(b"abc")),
            ("crlf", b"abc\r\n", Ok(b"abc")),
            ("empty", b"", Err(())),
            ("only newline", b"\n", Err(())),
            ("inner newline", b"ab\ncd\n", Err(())),
        ];
        for (name, content, want) in cases {
            let p = dir.path().join(name.replace(' ', "_"));
            std::fs::write(&p, content).unwrap();
            let got = SecretSource::File(p).load();
            match want {
                Ok(v) => assert_eq!(got.unwrap().expose(), *v, "case {name}"),
                Err(()) => assert!(matches!(got, Err(LoadError::Unreadable(_))), "case {name}"),
            }
        }
        let missing = SecretSource::File(dir.path().join("nope")).load();
        let Err(LoadError::Unreadable(msg)) = missing else {
            panic!("missing file must be unreadable")
        };
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn unset_env_is_missing_not_an_error() {
        let got = SecretSource::Env("SLAPENIR_TEST_SURELY_UNSET_VAR".into()).load();
        assert!(matches!(got, Err(LoadError::Missing(_))));
    }
}
