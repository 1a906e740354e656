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

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The stable id of a user (the `sub` claim).
    UserId
);
uuid_id!(
    /// The id of a session, i.e. of one refresh-token family (the `sid` claim).
    SessionId
);
