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
//! - when the session has truly ended (logged out elsewhere, revoked, expired, reused, the
//!   account deleted) it returns [`Error::SessionExpired`] and forgets the tokens — for a guest
//!   as for a registered user. It never continues as anyone else, and never signs in as a guest
//!   by itself: only [`Client::sign_in_anonymously`] does, when the program asks.
//!
//! Accounts have an email, a username or both ([`Client::login`],
//! [`Client::login_with_username`], [`Client::login_as`]), or neither for a guest
//! ([`Client::sign_in_anonymously`]), who can become a registered user in place, keeping the
//! user id and the session ([`Client::upgrade`]). [`Client::change_password`] and
//! [`Client::delete_account`] complete the set.
//!
//! ```no_run
//! use tessera_client::{Client, MemoryStore};
//!
//! # async fn demo() -> Result<(), tessera_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080", MemoryStore::new())?;
//! client.login("ada@example.com", "correct horse battery").await?;
//! let me = client.me().await?; // refreshed transparently when due
//! println!("signed in as user {} (session {})", me.id, me.session_id);
//! // Any other API of yours that trusts tessera's tokens:
//! let token = client.access_token().await?;
//! # let _ = token;
//! # Ok(()) }
//! ```

mod keeping;
mod store;

use keeping::Who;

use std::sync::Arc;
use std::time::Duration;

pub use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
pub use store::{FileStore, MemoryStore, StoreError, StoreLock, TokenSet, TokenStore, unix_now};
use tessera_proto::{
    DeleteAccountRequest, DeleteAccountResponse, Envelope, LoginRequest, PasswordChangeRequest, PasswordChangeResponse,
    RegisterRequest, RegisterResponse, RevokeResponse, Secret, SessionsResponse, TokenResponse, UpgradeRequest,
};
pub use tessera_proto::{ErrorCode, MeResponse, SessionView, SettingsResponse, UserView};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not logged in")]
    NotLoggedIn,
    /// The session has ended (for a guest too); the tokens are forgotten. Sign in again.
    #[error("the session has ended; log in again")]
    SessionExpired,
    /// A wrong email, username or password at login, or a wrong current password
    /// ([`Client::change_password`], [`Client::delete_account`]); the tokens are kept.
    #[error("invalid email, username or password")]
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

/// The name an account logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginName<'a> {
    Email(&'a str),
    Username(&'a str),
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

    /// What a client needs to know of the server's settings: whether guests may sign in.
    pub async fn settings(&self) -> Result<SettingsResponse, Error> {
        self.call(Method::GET, "/api/auth/settings", None::<&Value>, None).await
    }

    /// Registers an account with an email (it does not log in).
    pub async fn register(&self, email: &str, password: &str) -> Result<UserView, Error> {
        self.register_with(Some(email), None, password).await
    }

    /// Registers an account with a username and no email (it does not log in).
    pub async fn register_with_username(&self, username: &str, password: &str) -> Result<UserView, Error> {
        self.register_with(None, Some(username), password).await
    }

    /// Registers an account with an email, a username or both (it does not log in). A name
    /// someone else has is `Error::Api` with `EMAIL_TAKEN` or `USERNAME_TAKEN`.
    pub async fn register_with(
        &self,
        email: Option<&str>,
        username: Option<&str>,
        password: &str,
    ) -> Result<UserView, Error> {
        let body = RegisterRequest {
            email: email.map(str::to_owned),
            username: username.map(str::to_owned),
            password: Secret::new(password),
        };
        let reply: RegisterResponse = self.call(Method::POST, "/api/auth/register", Some(&body), None).await?;
        Ok(reply.user)
    }

    /// Logs in by email and stores the new token pair.
    pub async fn login(&self, email: &str, password: &str) -> Result<TokenSet, Error> {
        self.login_as(LoginName::Email(email), password).await
    }

    /// Logs in by username and stores the new token pair.
    pub async fn login_with_username(&self, username: &str, password: &str) -> Result<TokenSet, Error> {
        self.login_as(LoginName::Username(username), password).await
    }

    /// Logs in by email or username and stores the new token pair, replacing any stored one.
    pub async fn login_as(&self, name: LoginName<'_>, password: &str) -> Result<TokenSet, Error> {
        let (body, known) = match name {
            LoginName::Email(email) => (
                LoginRequest { email: Some(email.to_owned()), password: Secret::new(password), ..Default::default() },
                Who { email: email.trim().to_owned(), username: None, is_anonymous: false },
            ),
            LoginName::Username(username) => (
                LoginRequest {
                    username: Some(username.to_owned()),
                    password: Secret::new(password),
                    ..Default::default()
                },
                Who { email: String::new(), username: Some(username.trim().to_owned()), is_anonymous: false },
            ),
        };
        let reply: TokenResponse =
            self.call(Method::POST, "/api/auth/login", Some(&body), None).await.map_err(credentials)?;
        self.keep(reply, known).await
    }

    /// Opens a guest session (anonymous sign-in, when the server allows it: see
    /// [`settings`](Self::settings); else `Error::Api` with `ANONYMOUS_DISABLED`) and stores its
    /// token pair, replacing any stored one. Only an explicit call does this: an ended session
    /// is [`Error::SessionExpired`], never a fresh guest.
    pub async fn sign_in_anonymously(&self) -> Result<TokenSet, Error> {
        let reply: TokenResponse = self.call(Method::POST, "/api/auth/anonymous", None::<&Value>, None).await?;
        self.keep(reply, Who { email: String::new(), username: None, is_anonymous: true }).await
    }

    /// Turns the signed-in guest into a registered user with an email, a username or both, and a
    /// password: the same user id and the same session, whose refresh token the server rotates
    /// as a refresh would. The new pair is stored; it runs under the refresh gate and lock, so
    /// no refresh can present the token this rotates.
    ///
    /// A name someone else has is `Error::Api` with `EMAIL_TAKEN` or `USERNAME_TAKEN` (the
    /// guest's session goes on untouched); an account that is no guest, `ALREADY_REGISTERED`.
    pub async fn upgrade(
        &self,
        email: Option<&str>,
        username: Option<&str>,
        password: &str,
    ) -> Result<TokenSet, Error> {
        let _gate = self.inner.gate.lock().await;
        let _lock = self.lock_store().await?;
        let mut current = self.tokens()?.ok_or(Error::NotLoggedIn)?;
        if current.needs_refresh(unix_now()) {
            current = self.refresh_locked(&current).await?;
        }
        let mut retried = false;
        loop {
            let body = UpgradeRequest {
                email: email.map(str::to_owned),
                username: username.map(str::to_owned),
                password: Secret::new(password),
                refresh_token: Some(Secret::new(current.refresh_token.clone())),
                refresh_transport: None,
            };
            let answer = self
                .call::<TokenResponse>(Method::POST, "/api/auth/upgrade", Some(&body), Some(&current.access_token))
                .await;
            match answer {
                Ok(reply) => {
                    let known = Who {
                        email: email.map(|e| e.trim().to_owned()).unwrap_or_default(),
                        username: username.map(|u| u.trim().to_owned()),
                        is_anonymous: false,
                    };
                    let tokens = self.token_set(reply, known)?;
                    self.inner.store.save(&tokens)?;
                    return Ok(tokens);
                }
                // The refresh token is this session's current one (both locks are held), so the
                // session has ended.
                Err(Error::Api { code: ErrorCode::InvalidToken, .. }) => {
                    self.inner.store.clear()?;
                    return Err(Error::SessionExpired);
                }
                Err(Error::Api { status: 401, code: ErrorCode::Unauthorized, .. }) if !retried => {
                    retried = true;
                    current = self.refresh_locked(&current).await?;
                }
                Err(Error::Api { status: 401, code: ErrorCode::Unauthorized, .. }) => {
                    self.forget(&current)?;
                    return Err(Error::SessionExpired);
                }
                Err(e) => return Err(credentials(e)),
            }
        }
    }

    /// Changes the password of the signed-in user; every other session of the user ends, this
    /// one goes on. Returns how many sessions ended. A wrong `current` password is
    /// [`Error::InvalidCredentials`] (the tokens are kept); a guest, who has no password, gets
    /// `Error::Api` with `GUEST_ACCOUNT`.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<u64, Error> {
        let body = PasswordChangeRequest { current_password: Secret::new(current), new_password: Secret::new(new) };
        let reply: PasswordChangeResponse = self.authed_with(Method::POST, "/api/auth/password", Some(&body)).await?;
        Ok(reply.sessions_ended)
    }

    /// Deletes the signed-in account after ending all its sessions, and forgets the tokens. A
    /// registered user confirms with the password (a wrong one is [`Error::InvalidCredentials`],
    /// and nothing changes); a guest passes `None`.
    pub async fn delete_account(&self, password: Option<&str>) -> Result<(), Error> {
        let body = DeleteAccountRequest { password: password.map(Secret::new) };
        let reply: DeleteAccountResponse = self.authed_with(Method::DELETE, "/api/auth/account", Some(&body)).await?;
        if !reply.deleted {
            return Err(Error::Protocol("the server did not delete the account".into()));
        }
        let _lock = self.lock_store().await?;
        self.inner.store.clear()?;
        Ok(())
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
    ///
    /// A 401 `INVALID_CREDENTIALS` (a password the endpoint checks) is no sign of an ended session:
    /// it is returned as [`Error::InvalidCredentials`] at once, and the tokens are kept.
    pub async fn authed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Error> {
        self.authed_with(method, path, body).await
    }
}

/// A wrong password (`INVALID_CREDENTIALS`) as [`Error::InvalidCredentials`].
fn credentials(e: Error) -> Error {
    match e {
        Error::Api { code: ErrorCode::InvalidCredentials, .. } => Error::InvalidCredentials,
        other => other,
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
