//! Users and the rules for what they may register with.

use crate::clock::Timestamp;
use crate::ids::UserId;

/// A stored user. `email` is as registered (trimmed); `email_key` is what is unique and what
/// login looks up: the trimmed address in lower case.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub email_key: String,
    pub password_hash: String,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_EMAIL_BYTES: usize = 254;

/// A registrable email address: `(as entered but trimmed, lookup key)`, or why it is not one.
pub fn normalize_email(raw: &str) -> Result<(String, String), String> {
    let email = raw.trim();
    if email.is_empty() {
        return Err("email must not be empty".into());
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(format!("email must be at most {MAX_EMAIL_BYTES} bytes"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("email must not contain spaces or control characters".into());
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("email must look like name@example.com".into());
    };
    if local.is_empty() || local.contains('@') {
        return Err("email must have exactly one @ with a name before it".into());
    }
    let labels_ok = domain.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if !domain.contains('.') || !labels_ok {
        return Err("email must end in a domain such as example.com".into());
    }
    Ok((email.to_owned(), email.to_lowercase()))
}

/// `Ok` for an acceptable password, else why not.
pub fn check_password(password: &str) -> Result<(), String> {
    match password.len() {
        n if n < MIN_PASSWORD_BYTES => Err(format!("password must be at least {MIN_PASSWORD_BYTES} bytes")),
        n if n > MAX_PASSWORD_BYTES => Err(format!("password must be at most {MAX_PASSWORD_BYTES} bytes")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_keyed_in_lower_case() {
        assert_eq!(normalize_email("  Ada@Example.COM \n"), Ok(("Ada@Example.COM".into(), "ada@example.com".into())));
    }

    #[test]
    fn malformed_emails_are_rejected_with_a_reason() {
        for raw in [
            "",
            "   ",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@-x.com",
            "ada@example..com",
        ] {
            assert!(normalize_email(raw).is_err(), "{raw:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).unwrap_err().contains("254"));
    }

    #[test]
    fn passwords_must_be_8_to_1024_bytes() {
        assert!(check_password("1234567").unwrap_err().contains("at least 8"));
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert!(check_password(&"x".repeat(1025)).unwrap_err().contains("at most 1024"));
    }
}
