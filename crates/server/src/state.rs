//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use tessera_core::Timestamp;
use tessera_core::clients::Clients;
use tessera_core::clock::{Clock, SystemClock};
use tessera_core::service::AuthService;

use crate::cookies::CookiePolicy;
use crate::net::{AddressGroup, TrustedProxies};
use crate::ratelimit::Throttle;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    auth: AuthService,
    clock: Arc<dyn Clock>,
    clients: Clients,
    shutdown: tokio::sync::watch::Sender<bool>,
    policy: HttpPolicy,
}

/// How requests are guarded: cookies and CSRF, login limits, client addresses, bodies.
#[derive(Debug)]
pub struct HttpPolicy {
    pub cookies: CookiePolicy,
    /// Login and registration attempts per client address group.
    pub login_per_address: Option<Throttle<AddressGroup>>,
    /// Failed logins per account (by email or username key), from all addresses together.
    pub login_per_account: Option<Throttle<String>>,
    /// Whether guests may sign in, and how often per client address group.
    pub allow_anonymous: bool,
    pub anonymous_per_address: Option<Throttle<AddressGroup>>,
    pub proxies: Arc<TrustedProxies>,
    pub body_limit: usize,
    pub body_timeout: Duration,
}

impl AppState {
    /// The state of a server on the system's clock.
    pub fn new(auth: AuthService, clients: Clients, policy: HttpPolicy) -> Self {
        Self::with_clock(auth, clients, policy, Arc::new(SystemClock))
    }

    /// The state of a server whose handlers and maintenance ask `clock` what time it is.
    pub fn with_clock(auth: AuthService, clients: Clients, policy: HttpPolicy, clock: Arc<dyn Clock>) -> Self {
        let shutdown = tokio::sync::watch::channel(false).0;
        Self(Arc::new(Inner { auth, clock, clients, shutdown, policy }))
    }

    /// Now, by the server's clock: what every handler and the maintenance loop go by.
    pub fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    /// The server's clock, for work that outlives a request (the maintenance).
    pub fn clock(&self) -> &dyn Clock {
        &*self.0.clock
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

    pub fn policy(&self) -> &HttpPolicy {
        &self.0.policy
    }

    pub fn cookies(&self) -> &CookiePolicy {
        &self.0.policy.cookies
    }

    pub fn body_limit(&self) -> usize {
        self.0.policy.body_limit
    }
}
