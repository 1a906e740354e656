//! Confidential OAuth clients: the services allowed to introspect tokens (RFC 7662).
//!
//! An operator registers one with `tessera clients add NAME`, which prints its id and secret
//! once. The store keeps only the SHA-256 digest of the secret (256 random bits: a fast digest is
//! enough, nothing can be guessed from it), and checks compare digests in constant time. Clients
//! live in the user database, so every instance knows them.

use std::sync::Arc;

use aws_lc_rs::{constant_time, digest};

use crate::clock::Timestamp;
use crate::store::{ClientStore, StoreError, StoreResult, UniqueKey};

/// A registered client as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub id: String,
    pub name: String,
    pub secret_digest: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

/// The secret handed out once at registration.
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(…)")
    }
}

const MAX_NAME_CHARS: usize = 64;

fn secret_digest(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// Registration, look-up and authentication of clients over a [`ClientStore`].
#[derive(Clone)]
pub struct Clients {
    store: Arc<dyn ClientStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    InvalidName(String),
    #[error("a client named `{0}` exists already")]
    NameTaken(String),
    #[error(transparent)]
    Store(StoreError),
}

impl Clients {
    pub fn new(store: Arc<dyn ClientStore>) -> Self {
        Self { store }
    }

    /// Registers a client; its secret is returned here and never again.
    pub async fn register(&self, name: &str, now: Timestamp) -> Result<(OAuthClient, ClientSecret), ClientError> {
        let name = name.trim();
        let valid = !name.is_empty()
            && name.chars().count() <= MAX_NAME_CHARS
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(ClientError::InvalidName(format!(
                "a client name is 1 to {MAX_NAME_CHARS} letters, digits, `-`, `_` or `.`"
            )));
        }
        let secret = ClientSecret(crate::encode_id(&crate::random::bytes::<32>()));
        let client = OAuthClient {
            id: format!("tc_{}", crate::encode_id(&crate::random::bytes::<12>())),
            name: name.to_owned(),
            secret_digest: secret_digest(secret.expose()),
            created_at: now,
        };
        match self.store.create_client(&client).await {
            Ok(()) => Ok((client, secret)),
            Err(StoreError::Conflict(UniqueKey::ClientName)) => Err(ClientError::NameTaken(name.to_owned())),
            Err(e) => Err(ClientError::Store(e)),
        }
    }

    pub async fn list(&self) -> StoreResult<Vec<OAuthClient>> {
        self.store.list_clients().await
    }

    /// Removes the client with this id or name; `false` if there is none.
    pub async fn remove(&self, id_or_name: &str) -> StoreResult<bool> {
        self.store.delete_client(id_or_name).await
    }

    /// Whether `secret` is the secret of client `id`. Takes the same time whether or not the
    /// client exists (a digest compared in constant time either way).
    pub async fn authenticate(&self, id: &str, secret: &str) -> StoreResult<bool> {
        let stored = self.store.find_client(id).await?;
        let presented = secret_digest(secret);
        let expected = stored.as_ref().map_or_else(|| vec![0u8; presented.len()], |c| c.secret_digest.clone());
        let matches = constant_time::verify_slices_are_equal(&presented, &expected).is_ok();
        Ok(matches && stored.is_some())
    }
}
