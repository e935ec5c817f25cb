//! The `owner`/`date`/`signature` triple every authenticated MDS request carries (§9).
//! Only root signs; everyone else is authorised by owning the path, so their signature is
//! sent present but empty, as upstream does.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The user name the client signs for (hard-coded upstream).
pub const ROOT_USER: &str = "root";

/// Microseconds since the Unix epoch, taken fresh for each request (the MDS allows ±15 s).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Base64(HMAC-SHA256(password, `"<date>:<owner>"`)) for root with a password, else "".
pub fn signature(owner: &str, password: &str, date: u64) -> String {
    if owner != ROOT_USER || password.is_empty() {
        return String::new();
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(password.as_bytes()) else {
        // HMAC takes keys of any length; this branch is unreachable in practice.
        return String::new();
    };
    mac.update(format!("{date}:{owner}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The auth fields of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub owner: String,
    pub date: u64,
    pub signature: String,
}

impl Credentials {
    pub fn now(owner: &str, password: &str) -> Self {
        let date = now_us();
        Self {
            owner: owner.to_string(),
            date,
            signature: signature(owner, password, date),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn root_signature_matches_fixed_vector() {
        // Computed independently with Python's hmac/hashlib/base64.
        assert_eq!(
            signature("root", "root_password", 1_700_000_000_123_456),
            "pqAgnzxpQ/P6btlFBeSIJcYfZJTVonioPOD5nYwplv4="
        );
    }

    #[test]
    fn non_root_or_empty_password_is_unsigned() {
        assert_eq!(signature("curve", "secret", 1), "");
        assert_eq!(signature("root", "", 1), "");
    }

    #[test]
    fn date_is_microseconds() {
        // After 2020-01-01 in µs and before 2100 in µs.
        let d = now_us();
        assert!(
            d > 1_577_836_800_000_000 && d < 4_102_444_800_000_000,
            "{d}"
        );
    }
}

/// Who a call is made as: the owner and, for root, the password that signs the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub owner: String,
    pub password: String,
}
