//! Forward-auth (`GET /api/auth/verify`): what nginx's `auth_request`, Traefik's `ForwardAuth`
//! and Caddy's `forward_auth` ask about each request.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_live_session_is_answered_with_its_caller_in_headers() {
    let server = TestServer::start().await;
    let email = unique_email();
    let reply = server
        .post("/api/auth/register", json!({"email": email, "username": "forward_ada", "password": PASSWORD}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let tokens = server.login(&email).await;
    let claims = jwt_parts(&tokens.access).1;

    let reply = server.get("/api/auth/verify", &tokens.access).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(header(&reply, "x-tessera-user-id"), claims["sub"].as_str());
    assert_eq!(header(&reply, "x-tessera-session-id"), claims["sid"].as_str());
    assert_eq!(header(&reply, "x-tessera-email"), Some(email.as_str()));
    assert_eq!(header(&reply, "x-tessera-username"), Some("forward_ada"));
    assert_eq!(header(&reply, "x-tessera-anonymous"), Some("false"));
    assert_eq!(reply.data()["session_id"], claims["sid"]);

    let head = server.send(Method::HEAD, "/api/auth/verify", Some(&tokens.access), None, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(header(&head, "x-tessera-user-id"), claims["sub"].as_str());
}

#[tokio::test]
async fn a_guest_is_anonymous_without_email_or_username() {
    let server = TestServer::start_with(&["--allow-anonymous"]).await;
    let guest = tokens_of(&server.post("/api/auth/anonymous", json!({})).await);
    let reply = server.get("/api/auth/verify", &guest.access).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(header(&reply, "x-tessera-anonymous"), Some("true"));
    assert_eq!(header(&reply, "x-tessera-email"), None);
    assert_eq!(header(&reply, "x-tessera-username"), None);
}

#[tokio::test]
async fn no_token_a_bad_one_or_an_ended_session_is_refused_with_a_challenge() {
    let server = TestServer::start().await;
    let tokens = server.user(&unique_email()).await;
    let none = server.send(Method::GET, "/api/auth/verify", None, None, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(header(&none, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", none.headers);
    assert_eq!(header(&none, "x-tessera-user-id"), None);

    let forged = format!("{}x", tokens.access);
    assert_eq!(server.get("/api/auth/verify", &forged).await.status, StatusCode::UNAUTHORIZED);

    let logout = server.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.body);
    let ended = server.get("/api/auth/verify", &tokens.access).await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
    assert!(header(&ended, "www-authenticate").is_some_and(|v| v.contains("invalid_token")));
    assert_eq!(header(&ended, "x-tessera-user-id"), None);
}

/// The README's nginx snippet, with this test's addresses for the app's and tessera's.
fn readme_nginx_snippet(app: &str, tessera: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("```nginx\n").expect("the README has an nginx snippet") + "```nginx\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].replace("127.0.0.1:5000", app).replace("127.0.0.1:8080", tessera)
}

/// Debian's nginx in the foreground, one process, everything in `dir`.
struct Nginx {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    async fn start(locations: &str) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is missing: scripts/test installs Debian's package");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path().display();
        let config = format!(
            "daemon off; master_process off; worker_processes 1; error_log stderr warn; pid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port};\n{locations}\n}} }}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = std::process::Command::new(binary)
            .args(["-p", &d.to_string(), "-e", "stderr", "-c", &path.display().to_string()])
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let base = format!("http://127.0.0.1:{port}");
        let up = eventually(std::time::Duration::from_secs(10), async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        assert!(up, "nginx did not start");
        Self { child, base, _dir: dir }
    }
}

#[tokio::test]
async fn the_readmes_nginx_snippet_guards_an_app_with_auth_request() {
    let server = TestServer::start().await;
    let upstream = crate::gateway::Upstream::start();
    let snippet =
        readme_nginx_snippet(upstream.base.trim_start_matches("http://"), server.base.trim_start_matches("http://"));
    let nginx = Nginx::start(&snippet).await;
    let get = |bearer: Option<String>, headers: Vec<(&'static str, &'static str)>| {
        let mut request = http_client().get(format!("{}/echo", nginx.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { read(request.send().await.unwrap()).await }
    };

    assert_eq!(get(None, vec![]).await.status, StatusCode::UNAUTHORIZED);
    let reply = server.post("/api/auth/register", json!({"username": "nginx_ada", "password": PASSWORD})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let login = server.post("/api/auth/login", json!({"username": "nginx_ada", "password": PASSWORD})).await;
    let tokens = tokens_of(&login);
    let claims = jwt_parts(&tokens.access).1;
    let spoofs = vec![("x-tessera-user-id", "someone-else"), ("x-tessera-email", "boss@example.com")];
    let echo = get(Some(tokens.access.clone()), spoofs).await;
    assert_eq!(echo.status, StatusCode::OK, "{}", echo.body);
    let headers = &echo.body["headers"];
    assert_eq!(headers["x-tessera-user-id"], claims["sub"]);
    assert_eq!(headers["x-tessera-username"], "nginx_ada");
    assert!(headers.get("x-tessera-email").is_none(), "a spoofed email of an account without one: {headers}");

    let logout = server.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await;
    assert_eq!(logout.status, StatusCode::OK);
    assert_eq!(get(Some(tokens.access.clone()), vec![]).await.status, StatusCode::UNAUTHORIZED);
}
