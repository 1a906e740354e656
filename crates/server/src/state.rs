//! What every handler shares.

use std::sync::Arc;

use tessera_core::clients::Clients;
use tessera_core::service::AuthService;

use crate::cookies::CookiePolicy;
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    auth: AuthService,
    clients: Clients,
    shutdown: tokio::sync::watch::Sender<bool>,
    cookies: CookiePolicy,
    login_limiter: Option<RateLimiter>,
    body_limit: usize,
}

impl AppState {
    pub fn new(
        auth: AuthService,
        clients: Clients,
        cookies: CookiePolicy,
        login_limiter: Option<RateLimiter>,
        body_limit: usize,
    ) -> Self {
        Self(Arc::new(Inner {
            auth,
            clients,
            shutdown: tokio::sync::watch::channel(false).0,
            cookies,
            login_limiter,
            body_limit,
        }))
    }

    pub fn auth(&self) -> &AuthService {
        &self.0.auth
    }

    pub fn clients(&self) -> &Clients {
        &self.0.clients
    }

    /// Tells long-lived responses that the server is stopping.
    pub fn begin_shutdown(&self) {
        self.0.shutdown.send_replace(true);
    }

    /// Becomes `true` when the server begins to stop.
    pub fn shutting_down(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.shutdown.subscribe()
    }

    pub fn cookies(&self) -> &CookiePolicy {
        &self.0.cookies
    }

    pub fn login_limiter(&self) -> Option<&RateLimiter> {
        self.0.login_limiter.as_ref()
    }

    pub fn body_limit(&self) -> usize {
        self.0.body_limit
    }
}
