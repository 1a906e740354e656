//! What every handler shares.

use std::sync::Arc;

use tessera_core::service::AuthService;

use crate::cookies::CookiePolicy;
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    auth: AuthService,
    cookies: CookiePolicy,
    login_limiter: Option<RateLimiter>,
    body_limit: usize,
}

impl AppState {
    pub fn new(
        auth: AuthService,
        cookies: CookiePolicy,
        login_limiter: Option<RateLimiter>,
        body_limit: usize,
    ) -> Self {
        Self(Arc::new(Inner { auth, cookies, login_limiter, body_limit }))
    }

    pub fn auth(&self) -> &AuthService {
        &self.0.auth
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
