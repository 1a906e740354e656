//! How a [`Client`] keeps its tokens fresh: the authorized call with one refresh and one retry
//! on a 401, the single-flight refresh (one async gate per client, the store's lock across
//! processes, the tokens read again once both are held), and keeping or forgetting a pair.

use super::*;

impl Client {
    pub(crate) async fn authed_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let tokens = self.fresh_tokens().await?;
        match self.call(method.clone(), path, body, Some(&tokens.access_token)).await {
            Err(Error::Api { status: 401, code, .. }) if code != ErrorCode::InvalidCredentials => {}
            other => return other.map_err(credentials),
        }
        let renewed = self.refresh_if(|current| current.access_token == tokens.access_token).await?;
        match self.call(method, path, body, Some(&renewed.access_token)).await {
            // A fresh token refused: whatever the reason, this session cannot go on.
            Err(Error::Api { status: 401, code, .. }) if code != ErrorCode::InvalidCredentials => {
                self.forget(&renewed)?;
                Err(Error::SessionExpired)
            }
            other => other.map_err(credentials),
        }
    }

    /// The stored tokens, refreshed first if they are due.
    pub(crate) async fn fresh_tokens(&self) -> Result<TokenSet, Error> {
        let tokens = self.tokens()?.ok_or(Error::NotLoggedIn)?;
        let now = unix_now();
        if !tokens.needs_refresh(now) {
            return Ok(tokens);
        }
        self.refresh_if(|current| current.needs_refresh(now)).await
    }

    /// Refreshes unless, once this caller holds the gate and the store lock, the stored tokens
    /// no longer satisfy `stale` (another task or process has refreshed meanwhile).
    pub(crate) async fn refresh_if(&self, stale: impl Fn(&TokenSet) -> bool) -> Result<TokenSet, Error> {
        let _gate = self.inner.gate.lock().await;
        let _lock = self.lock_store().await?;
        let current = self.tokens()?.ok_or(Error::NotLoggedIn)?;
        if !stale(&current) {
            return Ok(current);
        }
        self.refresh_locked(&current).await
    }

    /// Presents `current`'s refresh token and stores the new pair; the caller holds the gate and
    /// the store lock, and read `current` under them.
    pub(crate) async fn refresh_locked(&self, current: &TokenSet) -> Result<TokenSet, Error> {
        let body = json!({ "refresh_token": current.refresh_token });
        match self.call::<TokenResponse>(Method::POST, "/api/auth/refresh", Some(&body), None).await {
            Ok(reply) => {
                let tokens = self.token_set(reply, Who::of(current))?;
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
    pub(crate) fn forget(&self, tokens: &TokenSet) -> Result<(), Error> {
        if self.tokens()?.as_ref() == Some(tokens) {
            self.inner.store.clear()?;
        }
        Ok(())
    }

    pub(crate) async fn lock_store(&self) -> Result<StoreLock, Error> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.lock())
            .await
            .map_err(|e| Error::Protocol(format!("lock task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Stores the pair of a new session (login, guest sign-in), replacing any stored one.
    pub(crate) async fn keep(&self, reply: TokenResponse, known: Who) -> Result<TokenSet, Error> {
        let tokens = self.token_set(reply, known)?;
        let _lock = self.lock_store().await?;
        self.inner.store.save(&tokens)?;
        Ok(tokens)
    }

    /// The token set of an answer: who it is comes from the answer's `user` when it has one
    /// (login, guest sign-in, upgrade), else from `known` (a refresh keeps the names it had).
    pub(crate) fn token_set(&self, reply: TokenResponse, known: Who) -> Result<TokenSet, Error> {
        let refresh_token =
            reply.refresh_token.ok_or_else(|| Error::Protocol("no refresh_token in the answer".into()))?.into_inner();
        let who = reply.user.as_ref().map_or(known, Who::of_user);
        Ok(TokenSet {
            server: self.inner.server.clone(),
            email: who.email,
            username: who.username,
            is_anonymous: who.is_anonymous,
            access_token: reply.token.into_inner(),
            refresh_token,
            expires_at: unix_now() + reply.expires_in,
            expires_in: reply.expires_in,
        })
    }

    /// One HTTP exchange with the envelope unwrapped.
    pub(crate) async fn call<T: DeserializeOwned>(
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

/// Who a token set belongs to.
pub(crate) struct Who {
    /// Empty for an account without an email.
    pub(crate) email: String,
    pub(crate) username: Option<String>,
    pub(crate) is_anonymous: bool,
}

impl Who {
    pub(crate) fn of(tokens: &TokenSet) -> Self {
        Self { email: tokens.email.clone(), username: tokens.username.clone(), is_anonymous: tokens.is_anonymous }
    }

    pub(crate) fn of_user(user: &UserView) -> Self {
        Self {
            email: user.email.clone().unwrap_or_default(),
            username: user.username.clone(),
            is_anonymous: user.is_anonymous,
        }
    }
}
