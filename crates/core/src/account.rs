//! Users and the rules for what they may register with.

use crate::clock::Timestamp;
use crate::ids::UserId;

/// A stored user: a registered account (with an email, a username or both, and a password) or
/// a guest (anonymous: none of those). `email` and `username` are shown as registered;
/// `email_key` and `username_key` are what is unique and what login looks up.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Option<String>,
    pub email_key: Option<String>,
    pub username: Option<String>,
    pub username_key: Option<String>,
    /// `None` for a guest.
    pub password_hash: Option<String>,
    pub is_anonymous: bool,
    pub created_at: Timestamp,
}

impl User {
    /// A new guest.
    pub fn guest(now: Timestamp) -> Self {
        Self {
            id: UserId::generate(),
            email: None,
            email_key: None,
            username: None,
            username_key: None,
            password_hash: None,
            is_anonymous: true,
            created_at: now,
        }
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("username", &self.username)
            .field("is_anonymous", &self.is_anonymous)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_EMAIL_BYTES: usize = 254;

/// A registrable email address: `(as shown, lookup key)`, or why it is not one.
///
/// Two addresses that look the same are the same account, and an address that cannot be shown
/// unambiguously is refused:
/// - invisible characters (zero-width spaces and joiners, soft hyphens, byte-order marks,
///   bidirectional controls, variation selectors and the other default-ignorable code points)
///   are refused rather than dropped, so nobody is surprised by what their address is;
/// - the address is NFKC-normalised (full-width `ａ` is `a`);
/// - the name before `@` must then be printable ASCII: internationalised local parts are where
///   look-alike letters hide, and few mail systems deliver to them;
/// - the domain goes through IDNA (UTS 46) to its ASCII form, which is what the key holds, and a
///   label that mixes ASCII letters with Cyrillic or Greek ones (the classic homographs, such as
///   a Cyrillic `а` in `exаmple`) is refused; a label wholly in one script is fine.
///
/// The key is the ASCII form in lower case: `Ada@Bücher.example` keys as
/// `ada@xn--bcher-kva.example`; the address is shown as entered (trimmed and NFKC-normalised).
pub fn normalize_email(raw: &str) -> Result<(String, String), String> {
    use unicode_normalization::UnicodeNormalization;
    let email = raw.trim();
    if email.is_empty() {
        return Err("email must not be empty".into());
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(format!("email must be at most {MAX_EMAIL_BYTES} bytes"));
    }
    if email.chars().any(is_invisible) {
        return Err("email must not contain invisible characters".into());
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("email must not contain spaces or control characters".into());
    }
    let email: String = email.nfkc().collect();
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("email must look like name@example.com".into());
    };
    if local.is_empty() || local.contains('@') {
        return Err("email must have exactly one @ with a name before it".into());
    }
    if !local.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the name before @ must be plain ASCII letters, digits or punctuation".into());
    }
    let labels_ok = domain.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if !domain.contains('.') || !labels_ok {
        return Err("email must end in a domain such as example.com".into());
    }
    if domain.split('.').any(mixes_ascii_with_homographs) {
        return Err("the domain mixes Latin letters with look-alike Cyrillic or Greek ones".into());
    }
    let ascii_domain = idna::domain_to_ascii(domain).map_err(|_| "the domain is not a valid domain name".to_owned())?;
    let key = format!("{}@{ascii_domain}", local.to_ascii_lowercase());
    if email.len() > MAX_EMAIL_BYTES || key.len() > MAX_EMAIL_BYTES {
        return Err(format!("email must be at most {MAX_EMAIL_BYTES} bytes"));
    }
    Ok((email.clone(), key))
}

/// Default-ignorable code points: characters that render as nothing.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF
        | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

fn mixes_ascii_with_homographs(label: &str) -> bool {
    let ascii = label.chars().any(|c| c.is_ascii_alphabetic());
    // Greek (U+0370–03FF) and Cyrillic (U+0400–052F).
    let homograph = label.chars().any(|c| matches!(c as u32, 0x0370..=0x052F));
    ascii && homograph
}

pub const MIN_USERNAME_CHARS: usize = 3;
pub const MAX_USERNAME_CHARS: usize = 32;

/// A registrable username: `(as shown, lookup key)`, or why it is not one.
///
/// 3 to 32 ASCII letters, digits, `_`, `.` and `-`, beginning and ending with a letter or digit;
/// unique without regard to case (the key is the lower-case form), shown as registered.
/// - ASCII only, because a username is shown to other people, and letters from other scripts
///   bring look-alikes (a Cyrillic `а` for a Latin `a`) that no normalisation can tell apart;
/// - no `@`, so a username is never mistaken for an email address, in a login form or a log;
/// - punctuation only inside, so `ada.` and `.ada` are not separate accounts beside `ada`;
/// - at most 32 characters: it travels in every access token (`preferred_username`).
pub fn normalize_username(raw: &str) -> Result<(String, String), String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if !(MIN_USERNAME_CHARS..=MAX_USERNAME_CHARS).contains(&chars) {
        return Err(format!("username must be {MIN_USERNAME_CHARS} to {MAX_USERNAME_CHARS} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return Err("username may contain only ASCII letters, digits, `_`, `.` and `-`".into());
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !edge_ok(name.bytes().next()) || !edge_ok(name.bytes().last()) {
        return Err("username must begin and end with a letter or digit".into());
    }
    Ok((name.to_owned(), name.to_ascii_lowercase()))
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
    fn usernames_are_plain_ascii_and_unique_without_regard_to_case() {
        assert_eq!(
            normalize_username(" Ada_Lovelace-1.0 ").unwrap(),
            ("Ada_Lovelace-1.0".into(), "ada_lovelace-1.0".into())
        );
        for bad in ["ab", &"a".repeat(33), "ada@example.com", "ada lovelace", "аda", "_ada", "ada.", "ad\u{200b}a", ""]
        {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
    }

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
    fn invisible_characters_are_refused_rather_than_making_a_look_alike_account() {
        for raw in
            ["ada\u{200B}@example.com", "a\u{00AD}da@example.com", "\u{FEFF}ada@example.com", "ada@exa\u{200D}mple.com"]
        {
            assert!(normalize_email(raw).unwrap_err().contains("invisible"), "{raw:?}");
        }
    }

    #[test]
    fn compatibility_forms_and_internationalised_domains_key_as_one_account() {
        let key = |raw: &str| normalize_email(raw).unwrap().1;
        assert_eq!(key("ａｄａ@ｅｘａｍｐｌｅ.com"), "ada@example.com", "full-width letters are NFKC-folded");
        assert_eq!(key("ada@BÜCHER.example"), "ada@xn--bcher-kva.example", "IDNA, lower-cased");
        assert_eq!(key("ada@bücher.example"), key("ada@xn--bcher-kva.example"));
        assert_eq!(normalize_email(" Ada@Bücher.example").unwrap().0, "Ada@Bücher.example", "shown as written");
    }

    #[test]
    fn what_cannot_be_shown_unambiguously_is_refused() {
        // A Cyrillic "а" among Latin letters, in the name or the domain.
        assert!(normalize_email("\u{0430}da@example.com").is_err());
        assert!(normalize_email("ada@ex\u{0430}mple.com").is_err());
        // A domain wholly in one other script is fine.
        assert!(normalize_email("ada@\u{043F}\u{0440}\u{0438}\u{043C}\u{0435}\u{0440}.example").is_ok());
    }

    #[test]
    fn passwords_must_be_8_to_1024_bytes() {
        assert!(check_password("1234567").unwrap_err().contains("at least 8"));
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert!(check_password(&"x".repeat(1025)).unwrap_err().contains("at most 1024"));
    }
}
