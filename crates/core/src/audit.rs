//! Audit events: one list of every event tessera logs under the `audit` target.
//!
//! Each event is logged once, with [`audit!`](crate::audit!), as a structured log line whose
//! `event` field is the event's name; the server's `/metrics` counts the lines by that name, so
//! an event can be neither logged without being counted nor counted under another spelling.

/// Every audit event, by the name it has in the log and in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEvent {
    UserRegistered,
    LoginSucceeded,
    LoginFailed,
    TokenRefreshed,
    RefreshTokenReused,
    LoggedOut,
    SessionRevoked,
    AnonymousSignedIn,
    UserUpgraded,
    PasswordChanged,
    AccountDeleted,
    ClientAuthenticationFailed,
}

impl AuditEvent {
    /// Every event, in the order `/metrics` exports them.
    pub const ALL: [Self; 12] = [
        Self::UserRegistered,
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::TokenRefreshed,
        Self::RefreshTokenReused,
        Self::LoggedOut,
        Self::SessionRevoked,
        Self::AnonymousSignedIn,
        Self::UserUpgraded,
        Self::PasswordChanged,
        Self::AccountDeleted,
        Self::ClientAuthenticationFailed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UserRegistered => "user_registered",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::TokenRefreshed => "token_refreshed",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::LoggedOut => "logged_out",
            Self::SessionRevoked => "session_revoked",
            Self::AnonymousSignedIn => "anonymous_signed_in",
            Self::UserUpgraded => "user_upgraded",
            Self::PasswordChanged => "password_changed",
            Self::AccountDeleted => "account_deleted",
            Self::ClientAuthenticationFailed => "client_authentication_failed",
        }
    }

    /// The event of this name, as logged.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The event's place in [`AuditEvent::ALL`], which lists them in declaration order.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[doc(hidden)]
pub use tracing as __tracing;

/// Logs an audit event at a `tracing` level, with more fields after it:
/// `audit!(info, LoginSucceeded, user_id = %id)`.
#[macro_export]
macro_rules! audit {
    ($level:ident, $event:ident $(, $($field:tt)+)?) => {
        $crate::audit::__tracing::$level!(
            target: "audit",
            event = $crate::audit::AuditEvent::$event.as_str()
            $(, $($field)+)?
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found_again() {
        for (i, event) in AuditEvent::ALL.into_iter().enumerate() {
            assert_eq!(AuditEvent::from_name(event.as_str()), Some(event));
            assert_eq!(event.index(), i);
        }
        assert_eq!(AuditEvent::from_name("no_such_event"), None);
    }

    /// Every audit line of the workspace's code goes through `audit!`, so that each is one of
    /// [`AuditEvent::ALL`] (and therefore counted in `/metrics`).
    #[test]
    fn no_audit_line_bypasses_the_event_list() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut offenders = Vec::new();
        let mut dirs = vec![crates];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("core/src/audit.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if text.contains(r#"target: "audit""#) {
                        offenders.push(path.display().to_string());
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "audit lines written without audit!: {offenders:?}");
    }

    /// The README's list of audit events (README, "Operations") is exactly [`AuditEvent::ALL`].
    #[test]
    fn the_readme_lists_every_event_and_no_other() {
        let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(readme).unwrap();
        let intro = "an `event` field:";
        let start = readme.find(intro).expect("the README lists the audit events") + intro.len();
        let end = start + readme[start..].find("No token or password").expect("the list's end");
        let listed: std::collections::BTreeSet<&str> = readme[start..end]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|word| word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .collect();
        let events: std::collections::BTreeSet<&str> = AuditEvent::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(listed, events);
    }
}
