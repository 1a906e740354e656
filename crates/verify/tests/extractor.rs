//! The verifier end to end against a stand-in issuer on loopback: a JWKS and a revocation feed
//! served by axum, tokens signed with a key made here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tessera_verify::jwk::{Jwk, Jwks};
use tessera_verify::{AccessClaims, Authenticated, SessionId, Timestamp, UserId, Verifier};
use tokio::sync::broadcast;
use tower::ServiceExt;

struct Issuer {
    url: String,
    key: EncodingKey,
    kid: String,
    ends: broadcast::Sender<String>,
}

impl Issuer {
    async fn start() -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let kid = "test-key".to_owned();
        let jwks = Jwks {
            keys: vec![Jwk {
                kty: "EC".into(),
                crv: "P-256".into(),
                x: URL_SAFE_NO_PAD.encode(&point[1..33]),
                y: URL_SAFE_NO_PAD.encode(&point[33..]),
                kid: kid.clone(),
                use_: "sig".into(),
                alg: "ES256".into(),
            }],
        };
        let ends = broadcast::channel::<String>(16).0;
        let feed = ends.clone();
        let app =
            Router::new().route("/.well-known/jwks.json", get(move || async move { axum::Json(jwks.clone()) })).route(
                "/api/auth/revocations",
                get(move || {
                    let live = tokio_stream(feed.subscribe());
                    let synced = Event::default().event("synced").data(r#"{"retention_secs":600}"#);
                    let events = futures_util::stream::once(async move { Ok::<_, Infallible>(synced) }).chain(live);
                    async move { Sse::new(events) }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, key: EncodingKey::from_ec_der(pkcs8.as_ref()), kid, ends }
    }

    fn claims(&self, session: SessionId, exp: i64) -> AccessClaims {
        AccessClaims {
            iss: self.url.clone(),
            aud: "tessera".into(),
            sub: UserId::from_bytes([7; 16]).to_string(),
            email: Some("ada@example.com".into()),
            preferred_username: None,
            is_anonymous: false,
            sid: session.to_string(),
            jti: "jti".into(),
            iat: Timestamp::now().as_secs(),
            exp,
            nbf: None,
        }
    }

    fn token(&self, claims: &AccessClaims) -> String {
        self.token_with(claims, |_| {})
    }

    /// A token whose header `edit` changed after it was set up as tessera's.
    fn token_with(&self, claims: &AccessClaims, edit: impl FnOnce(&mut Header)) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        edit(&mut header);
        let token = jsonwebtoken::encode(&header, claims, &self.key).unwrap();
        // Signed as tessera signs: the low-`s` spelling (tessera_verify::ecdsa).
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        tessera_verify::ecdsa::normalize_s(&mut signature);
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn fresh_token(&self, session: SessionId) -> String {
        self.token(&self.claims(session, Timestamp::now().as_secs() + 600))
    }

    fn end(&self, session: SessionId) {
        let data = format!(r#"{{"sid":"{session}","ended_at":{}}}"#, Timestamp::now().as_millis());
        self.ends.send(data).unwrap();
    }
}

/// The feed's live part: each end as an `ended` event.
fn tokio_stream(
    ends: broadcast::Receiver<String>,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send {
    futures_util::stream::unfold((0u64, ends), |(n, mut ends)| async move {
        let data = ends.recv().await.ok()?;
        Some((Ok(Event::default().event("ended").id(format!("{n}-0")).data(data)), (n + 1, ends)))
    })
}

async fn call(app: &Router, token: Option<&str>) -> (StatusCode, String, String) {
    let mut request = Request::get("/");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let challenge =
        response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (status, challenge, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn option_authenticated_is_none_without_a_token_and_still_refuses_a_bad_one() {
    let issuer = Issuer::start().await;
    let verifier = Verifier::builder(&issuer.url).build().await.unwrap();
    let app = Router::new()
        .route(
            "/",
            get(|caller: Option<Authenticated>| async move {
                caller.map_or_else(|| "anonymous".to_owned(), |c| c.email().unwrap().to_owned())
            }),
        )
        .layer(verifier.extension());

    assert_eq!(call(&app, None).await, (StatusCode::OK, String::new(), "anonymous".into()));
    let good = issuer.fresh_token(SessionId::generate());
    assert_eq!(call(&app, Some(&good)).await.2, "ada@example.com");
    let (status, challenge, _) = call(&app, Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a bad token is never an anonymous caller");
    assert!(challenge.starts_with(r#"Bearer error="invalid_token""#), "{challenge}");
}

#[tokio::test]
async fn the_layer_refuses_without_a_token_and_hands_the_caller_on() {
    let issuer = Issuer::start().await;
    let verifier = Verifier::builder(&issuer.url).build().await.unwrap();
    let app = Router::new()
        .route("/", get(|caller: Authenticated| async move { caller.session_id.to_string() }))
        .layer(verifier.require());
    let (status, challenge, _) = call(&app, None).await;
    assert_eq!((status, challenge.as_str()), (StatusCode::UNAUTHORIZED, "Bearer"));
    let session = SessionId::generate();
    assert_eq!(call(&app, Some(&issuer.fresh_token(session))).await.2, session.to_string());
}

#[tokio::test]
async fn an_end_pushed_by_the_feed_is_refused_at_once() {
    let issuer = Issuer::start().await;
    let verifier = Verifier::builder(&issuer.url).build().await.unwrap();
    let session = SessionId::generate();
    let token = issuer.fresh_token(session);
    assert!(verifier.verify(&token).await.is_ok());
    let ended = tokio::spawn({
        let verifier = verifier.clone();
        async move { verifier.session_ended(session).await }
    });
    issuer.end(session);
    let reason = tokio::time::timeout(Duration::from_secs(2), ended).await.expect("the waiter wakes").unwrap();
    assert_eq!(reason, tessera_verify::VerifyError::SessionEnded);
    assert_eq!(verifier.verify(&token).await.unwrap_err(), tessera_verify::VerifyError::SessionEnded);
    assert!(verifier.verify(&issuer.fresh_token(SessionId::generate())).await.is_ok(), "other sessions live");
}

#[tokio::test]
async fn expiry_is_exact_by_default_and_the_leeway_is_a_setting() {
    let issuer = Issuer::start().await;
    let now = Timestamp::now().as_secs();
    let just_expired = issuer.token(&issuer.claims(SessionId::generate(), now));
    let strict = Verifier::builder(&issuer.url).build().await.unwrap();
    assert_eq!(strict.verify(&just_expired).await.unwrap_err(), tessera_verify::VerifyError::Expired);
    let lenient = Verifier::builder(&issuer.url).leeway(Duration::from_secs(30)).build().await.unwrap();
    assert!(lenient.verify(&just_expired).await.is_ok());
}

#[tokio::test]
async fn tokens_for_another_issuer_or_audience_are_refused() {
    let issuer = Issuer::start().await;
    let verifier = Verifier::builder(&issuer.url).build().await.unwrap();
    let mut claims = issuer.claims(SessionId::generate(), Timestamp::now().as_secs() + 600);
    claims.aud = "billing".into();
    assert!(verifier.verify(&issuer.token(&claims)).await.is_err(), "audience");
    claims.aud = "tessera".into();
    claims.iss = "https://evil.example".into();
    assert!(verifier.verify(&issuer.token(&claims)).await.is_err(), "issuer");
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused_unless_within_the_leeway() {
    let issuer = Issuer::start().await;
    let now = Timestamp::now().as_secs();
    let mut claims = issuer.claims(SessionId::generate(), now + 600);
    claims.iat = now + 60;
    let early = issuer.token(&claims);
    let strict = Verifier::builder(&issuer.url).build().await.unwrap();
    assert_eq!(strict.verify(&early).await.unwrap_err(), tessera_verify::VerifyError::Invalid);
    claims.iat = now;
    claims.nbf = Some(now + 60);
    assert_eq!(strict.verify(&issuer.token(&claims)).await.unwrap_err(), tessera_verify::VerifyError::Invalid);
    let lenient = Verifier::builder(&issuer.url).leeway(Duration::from_secs(120)).build().await.unwrap();
    assert!(lenient.verify(&early).await.is_ok(), "clock skew within the leeway");
}

#[tokio::test]
async fn a_token_with_critical_extensions_or_another_type_is_refused() {
    let issuer = Issuer::start().await;
    let verifier = Verifier::builder(&issuer.url).build().await.unwrap();
    let claims = issuer.claims(SessionId::generate(), Timestamp::now().as_secs() + 600);
    let lowercase = issuer.token_with(&claims, |h| h.typ = Some("jwt".into()));
    assert!(verifier.verify(&lowercase).await.is_ok(), "media types are case-insensitive");
    type Edit = fn(&mut Header);
    let refused: [(&str, Edit); 4] = [
        ("crit (RFC 7515 §4.1.11)", |h| h.crit = Some(vec!["exp".into()])),
        ("an empty crit", |h| h.crit = Some(vec![])),
        ("another type", |h| h.typ = Some("at+jwt".into())),
        ("no type", |h| h.typ = None),
    ];
    for (what, edit) in refused {
        let token = issuer.token_with(&claims, edit);
        assert_eq!(verifier.verify(&token).await.unwrap_err(), tessera_verify::VerifyError::Invalid, "{what}");
    }
}

#[tokio::test]
async fn ids_in_another_spelling_are_refused() {
    let issuer = Issuer::start().await;
    let verifier = Verifier::builder(&issuer.url).build().await.unwrap();
    let claims = issuer.claims(SessionId::generate(), Timestamp::now().as_secs() + 600);
    let claims = AccessClaims { sub: UserId::from_bytes([0xab; 16]).to_string(), ..claims };
    assert!(verifier.verify(&issuer.token(&claims)).await.is_ok());
    for spell in [str::to_uppercase as fn(&str) -> String, |s: &str| s.replace('-', ""), |s: &str| format!("{{{s}}}")] {
        let sid = AccessClaims { sid: spell(&claims.sid), ..claims.clone() };
        assert!(verifier.verify(&issuer.token(&sid)).await.is_err(), "sid {}", sid.sid);
        let sub = AccessClaims { sub: spell(&claims.sub), ..claims.clone() };
        assert!(verifier.verify(&issuer.token(&sub)).await.is_err(), "sub {}", sub.sub);
    }
}
