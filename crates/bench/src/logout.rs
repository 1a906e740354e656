//! `logout-latency`: how long a resource server (or the gateway, `crate::gateway`) keeps
//! accepting an access token after its session was logged out on tessera.
//!
//! Each sample logs a fresh session in on tessera, checks that the target's path (the resource
//! server's `/protected`) answers 200 with its access token, logs it out with
//! `POST /api/auth/logout`, and from the moment that answer arrives polls the path every
//! [`POLL`] until it answers 401
//! (session ended). A sample that still gets no 401 after [`GIVE_UP`] counts as a failure, as
//! does any other step that fails or takes longer than [`STEP_TIMEOUT`]. One connection to each
//! server, one sample after another.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::StatusCode;
use hyper::body::Bytes;
use tokio::time::Instant;

use crate::BoxError;
use crate::api;
use crate::http::{Conn, Reply};
use crate::report::Summary;

/// Time between two polls after the logout.
pub const POLL: Duration = Duration::from_millis(2);
/// How long a logged-out token may still be accepted before the sample counts as a failure.
pub const GIVE_UP: Duration = Duration::from_secs(5);
/// Bound of each login, check and logout.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to log in and out, and which resource server to poll.
pub struct Target {
    pub label: &'static str,
    /// The tessera instance that logs sessions in and out.
    pub tessera: SocketAddr,
    /// The resource server (or gateway) whose verifier is fed by some tessera instance.
    pub resource: SocketAddr,
    /// Its path that needs a token.
    pub path: &'static str,
    pub login_body: Bytes,
}

/// Takes `count` samples; failed ones are counted as errors.
pub async fn measure(target: &Target, count: usize) -> Summary {
    let mut samples = Vec::with_capacity(count);
    let (mut errors, mut first_error) = (0, None);
    let mut conns = None;
    for _ in 0..count {
        let result = match conns.as_mut() {
            Some(conns) => sample(target, conns).await,
            None => match open(target).await {
                Ok(opened) => sample(target, conns.insert(opened)).await,
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(elapsed) => samples.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
                // Whatever went wrong, the next sample starts on fresh connections.
                conns = None;
            }
        }
    }
    Summary::of_samples(samples, errors, first_error, 0.0)
}

/// A connection to tessera and one to the resource server.
struct Conns {
    tessera: Conn,
    resource: Conn,
}

async fn open(target: &Target) -> Result<Conns, BoxError> {
    Ok(Conns { tessera: Conn::open(target.tessera).await?, resource: Conn::open(target.resource).await? })
}

/// One logout: the time from its answer to the first 401 of the resource server.
async fn sample(target: &Target, conns: &mut Conns) -> Result<Duration, String> {
    let tokens = step("login", api::login(&mut conns.tessera, target.login_body.clone())).await?;
    let bearer = api::bearer(&tokens).map_err(|e| e.to_string())?;
    let reply = step("GET before the logout", conns.resource.get(target.path, &bearer)).await?;
    if reply.status != StatusCode::OK {
        return Err(format!("GET {} before the logout: {}", target.path, reply.describe()));
    }
    step("logout", api::logout(&mut conns.tessera, &bearer)).await?;
    let logged_out = Instant::now();
    let deadline = logged_out + GIVE_UP;
    loop {
        let poll = tokio::time::timeout_at(deadline, conns.resource.get(target.path, &bearer)).await;
        let reply = match poll {
            Ok(reply) => reply.map_err(|e| format!("GET {} after the logout: {e}", target.path))?,
            Err(_) => return Err(gave_up(None)),
        };
        if reply.status == StatusCode::UNAUTHORIZED {
            let elapsed = logged_out.elapsed();
            return if session_ended(&reply) {
                Ok(elapsed)
            } else {
                Err(format!("GET {} after the logout: 401 for another reason: {}", target.path, reply.describe()))
            };
        }
        // 200 until the verifier learns of the logout; anything else is worth reporting.
        let other = (reply.status != StatusCode::OK).then(|| reply.describe());
        if Instant::now() + POLL >= deadline {
            return Err(gave_up(other));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs one step of a sample, bounded by [`STEP_TIMEOUT`].
async fn step<T>(what: &str, future: impl Future<Output = Result<T, BoxError>>) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(result) => result.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {STEP_TIMEOUT:?}")),
    }
}

fn gave_up(last: Option<String>) -> String {
    let last = last.map_or_else(String::new, |reply| format!(" (last answer: {reply})"));
    format!("the logged-out token was still accepted {GIVE_UP:?} after the logout{last}")
}

/// Whether a 401 says the session ended (RFC 6750 `invalid_token`, tessera-verify's wording).
fn session_ended(reply: &Reply) -> bool {
    let body = String::from_utf8_lossy(&reply.body);
    body.contains("invalid_token") && body.contains("session")
}
