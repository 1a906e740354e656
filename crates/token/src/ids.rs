//! Newtypes for the identifiers of users and sessions, so one cannot stand in for the other.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::random;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (version 4) id from the OS's randomness.
            pub fn generate() -> Self {
                Self(uuid::Builder::from_random_bytes(random::bytes::<16>()).into_uuid())
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        /// Only the canonical spelling (lowercase, hyphenated, as [`Display`](fmt::Display)
        /// writes it): an id has one spelling, in tokens, paths and the feed alike.
        impl FromStr for $name {
            type Err = NotAnId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let id = Uuid::try_parse(s).map_err(|_| NotAnId)?;
                let mut canonical = Uuid::encode_buffer();
                if id.hyphenated().encode_lower(&mut canonical) != s {
                    return Err(NotAnId);
                }
                Ok(Self(id))
            }
        }
    };
}

/// Text that is not an id in its canonical spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an id (a lowercase, hyphenated UUID)")]
pub struct NotAnId;

uuid_id!(
    /// The stable id of a user (the `sub` claim).
    UserId
);
uuid_id!(
    /// The id of a session, i.e. of one refresh-token family (the `sid` claim).
    SessionId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_spelling_is_an_id() {
        let id = SessionId::generate();
        let text = id.to_string();
        assert_eq!(text.parse::<SessionId>(), Ok(id));
        for other in [
            text.to_uppercase(),
            text.replace('-', ""),
            format!("{{{text}}}"),
            format!("urn:uuid:{text}"),
            format!(" {text}"),
        ] {
            assert_eq!(other.parse::<SessionId>(), Err(NotAnId), "{other}");
        }
    }
}
