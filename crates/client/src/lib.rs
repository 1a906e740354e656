//! A Rust client for tessera.
//!
//! [`Client`] logs in, keeps the token pair in a [`TokenStore`] ([`MemoryStore`] for programs,
//! [`FileStore`] for the CLI), attaches the access token to requests and keeps it fresh:
//!
//! - it refreshes **before expiry**: 5 minutes before, or at 80 % of the lifetime when that
//!   comes later (see [`TokenSet::refresh_at`]);
//! - **one refresh at a time** however many tasks wait (single-flight): refreshes go through one
//!   async gate per client and, for the file store, an advisory lock shared by every process; the
//!   tokens are re-read after both are held, so a waiter uses the pair its predecessor fetched
//!   instead of presenting a rotated token (which the server would take for theft);
//! - on a **401** it refreshes once and retries the request once;
//! - when the session has truly ended (logged out elsewhere, revoked, expired, reused) it returns
//!   [`Error::SessionExpired`] and forgets the tokens — it never continues as anyone else.
//!
//! ```no_run
//! use tessera_client::{Client, MemoryStore};
//!
//! # async fn demo() -> Result<(), tessera_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080", MemoryStore::new())?;
//! client.login("ada@example.com", "correct horse battery").await?;
//! let me = client.me().await?; // refreshed transparently when due
//! println!("signed in as {} (session {})", me.email, me.session_id);
//! // Any other API of yours that trusts tessera's tokens:
//! let token = client.access_token().await?;
//! # let _ = token;
//! # Ok(()) }
//! ```

mod store;

use std::sync::Arc;
use std::time::Duration;

pub use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
pub use store::{FileStore, MemoryStore, StoreError, StoreLock, TokenSet, TokenStore, unix_now};
use tessera_proto::{
    Envelope, ErrorCode, LoginRequest, MeResponse, RegisterRequest, RegisterResponse, RevokeResponse, Secret,
    SessionView, SessionsResponse, TokenResponse, UserView,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not logged in")]
    NotLoggedIn,
    #[error("the session has ended; log in again")]
    SessionExpired,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("cannot reach the tessera server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("{message} ({code:?}, HTTP {status})")]
    Api { status: u16, code: ErrorCode, message: String },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a logout went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logout {
    /// The server ended the session; the tokens are gone.
    Ended,
    /// The session had already ended on the server; the tokens are gone.
    AlreadyEnded,
    /// The server could not be reached; the tokens were removed here anyway, and the session
    /// stays valid on the server until it expires.
    LocalOnly { reason: String },
}

/// An access token for a long-lived connection, and when to replace it on that connection.
#[derive(Clone, PartialEq, Eq)]
pub struct SocketToken {
    pub token: String,
    /// When the token expires (Unix seconds).
    pub expires_at: u64,
    /// When to send its successor on the open connection (Unix seconds): the client's refresh
    /// point, and at least two seconds before expiry, so a server that closes sockets at expiry
    /// never has to.
    pub renew_at: u64,
}

impl std::fmt::Debug for SocketToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketToken")
            .field("expires_at", &self.expires_at)
            .field("renew_at", &self.renew_at)
            .finish_non_exhaustive()
    }
}

impl SocketToken {
    fn of(tokens: &TokenSet) -> Self {
        Self {
            token: tokens.access_token.clone(),
            expires_at: tokens.expires_at,
            renew_at: tokens.refresh_at().min(tokens.expires_at.saturating_sub(2)),
        }
    }

    /// How long until [`renew_at`](Self::renew_at), from now.
    pub fn renew_in(&self) -> Duration {
        Duration::from_secs(self.renew_at.saturating_sub(unix_now()))
    }
}

/// A tessera client; clones share tokens, refresh gate and connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    server: String,
    store: Arc<dyn TokenStore>,
    /// In-process single flight for refresh.
    gate: tokio::sync::Mutex<()>,
}

impl Client {
    /// A client of the server at `server` (e.g. `https://auth.example.com`).
    pub fn new(server: &str, store: impl TokenStore) -> Result<Self, Error> {
        // reqwest's rustls needs a crypto provider; tessera uses aws-lc everywhere. Installing
        // twice is harmless.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("tessera-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let server = server.trim_end_matches('/').to_owned();
        Ok(Self { inner: Arc::new(Inner { http, server, store: Arc::new(store), gate: tokio::sync::Mutex::new(()) }) })
    }

    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The stored tokens, if they belong to this client's server.
    pub fn tokens(&self) -> Result<Option<TokenSet>, Error> {
        Ok(self.inner.store.load()?.filter(|t| t.server.trim_end_matches('/') == self.inner.server))
    }

    pub async fn register(&self, email: &str, password: &str) -> Result<UserView, Error> {
        let body = RegisterRequest {
            email: Some(email.to_owned()),
            password: Secret::new(password),
            ..RegisterRequest::default()
        };
        let reply: RegisterResponse = self.call(Method::POST, "/api/auth/register", Some(&body), None).await?;
        Ok(reply.user)
    }

    /// Logs in and stores the new token pair.
    pub async fn login(&self, email: &str, password: &str) -> Result<TokenSet, Error> {
        let body =
            LoginRequest { email: Some(email.to_owned()), password: Secret::new(password), ..LoginRequest::default() };
        let reply: TokenResponse =
            self.call(Method::POST, "/api/auth/login", Some(&body), None).await.map_err(|e| match e {
                Error::Api { code: ErrorCode::InvalidCredentials, .. } => Error::InvalidCredentials,
                other => other,
            })?;
        let email = reply.user.as_ref().and_then(|u| u.email.clone()).unwrap_or_else(|| email.trim().to_owned());
        let tokens = self.token_set(reply, email)?;
        let _lock = self.lock_store().await?;
        self.inner.store.save(&tokens)?;
        Ok(tokens)
    }

    /// Ends the session on the server and forgets the tokens, even when the server cannot be
    /// reached (then it says so).
    pub async fn logout(&self) -> Result<Logout, Error> {
        if self.tokens()?.is_none() {
            return Err(Error::NotLoggedIn);
        }
        let outcome = match self.authed::<Value>(Method::POST, "/api/auth/logout", None).await {
            Ok(_) => Ok(Logout::Ended),
            Err(Error::SessionExpired) => Ok(Logout::AlreadyEnded),
            Err(Error::Unreachable { reason, .. }) => Ok(Logout::LocalOnly { reason }),
            Err(e) => Err(e),
        };
        self.inner.store.clear()?;
        outcome
    }

    /// A valid access token, refreshed first when due.
    pub async fn access_token(&self) -> Result<String, Error> {
        Ok(self.fresh_tokens().await?.access_token)
    }

    /// A token for a new connection of a socket or another long-lived transport (each connect
    /// and each reconnect asks anew): the stored access token, refreshed first when due, with
    /// when to renew it on the open socket. A session that has ended is
    /// [`Error::SessionExpired`], never a fresh anonymous session: a reconnect loop stops there.
    ///
    /// When the server refuses a handshake with this token (401), call
    /// [`renew_socket_token`](Self::renew_socket_token) once: it refreshes, or says the session
    /// ended.
    pub async fn socket_token(&self) -> Result<SocketToken, Error> {
        Ok(SocketToken::of(&self.fresh_tokens().await?))
    }

    /// The token to send on an open socket at [`SocketToken::renew_at`] (or to retry a refused
    /// handshake with): refreshes unless another task already replaced `current`.
    pub async fn renew_socket_token(&self, current: &SocketToken) -> Result<SocketToken, Error> {
        let renewed = self.refresh_if(|stored| stored.access_token == current.token).await?;
        Ok(SocketToken::of(&renewed))
    }

    /// Refreshes now (single-flight with any refresh already under way).
    pub async fn refresh(&self) -> Result<TokenSet, Error> {
        let before = self.tokens()?.ok_or(Error::NotLoggedIn)?;
        self.refresh_if(|current| current.refresh_token == before.refresh_token).await
    }

    pub async fn me(&self) -> Result<MeResponse, Error> {
        self.authed(Method::GET, "/api/auth/me", None).await
    }

    pub async fn sessions(&self) -> Result<Vec<SessionView>, Error> {
        Ok(self.authed::<SessionsResponse>(Method::GET, "/api/auth/sessions", None).await?.sessions)
    }

    pub async fn revoke_session(&self, id: &str) -> Result<(), Error> {
        let path = format!("/api/auth/sessions/{id}");
        self.authed::<RevokeResponse>(Method::DELETE, &path, None).await.map(|_| ())
    }

    /// Calls an endpoint of the API with the access token: refreshed first when due, and on a
    /// 401 refreshed once and retried once.
    pub async fn authed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Error> {
        let tokens = self.fresh_tokens().await?;
        match self.call(method.clone(), path, body, Some(&tokens.access_token)).await {
            Err(Error::Api { status: 401, .. }) => {}
            other => return other,
        }
        let renewed = self.refresh_if(|current| current.access_token == tokens.access_token).await?;
        match self.call(method, path, body, Some(&renewed.access_token)).await {
            // A fresh token refused: whatever the reason, this session cannot go on.
            Err(Error::Api { status: 401, .. }) => {
                self.forget(&renewed)?;
                Err(Error::SessionExpired)
            }
            other => other,
        }
    }

    /// The stored tokens, refreshed first if they are due.
    async fn fresh_tokens(&self) -> Result<TokenSet, Error> {
        let tokens = self.tokens()?.ok_or(Error::NotLoggedIn)?;
        let now = unix_now();
        if !tokens.needs_refresh(now) {
            return Ok(tokens);
        }
        self.refresh_if(|current| current.needs_refresh(now)).await
    }

    /// Refreshes unless, once this caller holds the gate and the store lock, the stored tokens
    /// no longer satisfy `stale` (another task or process has refreshed meanwhile).
    async fn refresh_if(&self, stale: impl Fn(&TokenSet) -> bool) -> Result<TokenSet, Error> {
        let _gate = self.inner.gate.lock().await;
        let _lock = self.lock_store().await?;
        let current = self.tokens()?.ok_or(Error::NotLoggedIn)?;
        if !stale(&current) {
            return Ok(current);
        }
        let body = json!({ "refresh_token": current.refresh_token });
        match self.call::<TokenResponse>(Method::POST, "/api/auth/refresh", Some(&body), None).await {
            Ok(reply) => {
                let tokens = self.token_set(reply, current.email.clone())?;
                self.inner.store.save(&tokens)?;
                Ok(tokens)
            }
            Err(Error::Api { code: ErrorCode::InvalidToken, .. }) => {
                self.inner.store.clear()?;
                Err(Error::SessionExpired)
            }
            Err(e) => Err(e),
        }
    }

    /// Clears the stored tokens if they are still `tokens`.
    fn forget(&self, tokens: &TokenSet) -> Result<(), Error> {
        if self.tokens()?.as_ref() == Some(tokens) {
            self.inner.store.clear()?;
        }
        Ok(())
    }

    async fn lock_store(&self) -> Result<StoreLock, Error> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.lock())
            .await
            .map_err(|e| Error::Protocol(format!("lock task failed: {e}")))?
            .map_err(Error::from)
    }

    fn token_set(&self, reply: TokenResponse, email: String) -> Result<TokenSet, Error> {
        let refresh_token =
            reply.refresh_token.ok_or_else(|| Error::Protocol("no refresh_token in the answer".into()))?.into_inner();
        Ok(TokenSet {
            server: self.inner.server.clone(),
            email,
            access_token: reply.token.into_inner(),
            refresh_token,
            expires_at: unix_now() + reply.expires_in,
            expires_in: reply.expires_in,
        })
    }

    /// One HTTP exchange with the envelope unwrapped.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        bearer: Option<&str>,
    ) -> Result<T, Error> {
        let mut request = self.inner.http.request(method, format!("{}{path}", self.inner.server));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let unreachable =
            |e: reqwest::Error| Error::Unreachable { server: self.inner.server.clone(), reason: error_chain(&e) };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Protocol(format!(
                "HTTP {status} with a body that is not tessera's ({e}); is {} a tessera server?",
                self.inner.server
            ))
        })?;
        match envelope.into_result() {
            Ok(data) if status.is_success() => Ok(data),
            Ok(_) => Err(Error::Protocol(format!("HTTP {status} with a success body"))),
            Err(e) => Err(Error::Api { status: status.as_u16(), code: e.code, message: e.message }),
        }
    }
}

/// The innermost cause of `e` ("Connection refused (os error 111)"): what a person can act on.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut innermost = e;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost.to_string()
}
