//! Why the gateway refused something: the answer a refused request gets.

/// What a refused request is answered with. Messages name credentials, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// A short, stable reason used as a metric label and in the audit log.
    pub reason: &'static str,
    pub message: String,
    /// The credential involved, if any.
    pub credential: Option<usize>,
}

impl Refusal {
    /// A refusal that involves no credential.
    pub fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason,
            message: message.into(),
            credential: None,
        }
    }
}
