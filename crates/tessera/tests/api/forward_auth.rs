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

/// The README's code block in `language`, with this test's addresses for the app's and
/// tessera's (host:port each).
fn readme_block(language: &str, app: &str, tessera: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let fence = format!("```{language}\n");
    let start = readme.find(&fence).unwrap_or_else(|| panic!("the README has a {language} block")) + fence.len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].replace("127.0.0.1:5000", app).replace("127.0.0.1:8080", tessera)
}

/// Debian's nginx or Caddy in the foreground on a free port, its files in a directory of its own.
struct Proxy {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// nginx, one process, serving `locations`.
    async fn nginx(locations: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
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
        let mut command = std::process::Command::new(binary("nginx"));
        command.args(["-p", &d.to_string(), "-e", "stderr", "-c", &path.display().to_string()]);
        Self::run(command, port, dir).await
    }

    /// Caddy on the README's Caddyfile, in front of the app at `app` and asking `tessera`.
    async fn caddy(app: &str, tessera: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let site =
            readme_block("caddyfile", app, tessera).replace("app.example.com", &format!("http://127.0.0.1:{port}"));
        // No admin endpoint or certificates in a test.
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, format!("{{\n    admin off\n    auto_https off\n}}\n{site}")).unwrap();
        let mut command = std::process::Command::new(binary("caddy"));
        command.args(["run", "--adapter", "caddyfile", "--config"]).arg(&path);
        for home in ["HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"] {
            command.env(home, dir.path());
        }
        Self::run(command, port, dir).await
    }

    async fn run(mut command: std::process::Command, port: u16, dir: tempfile::TempDir) -> Self {
        let child = command.stdout(std::process::Stdio::null()).spawn().expect("start the proxy");
        let proxy = Self { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
        let up = eventually(std::time::Duration::from_secs(15), async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        assert!(up, "the proxy did not start on {port}");
        proxy
    }
}

/// Debian's binary of `name`.
fn binary(name: &str) -> String {
    ["/usr/sbin", "/usr/bin"]
        .into_iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or_else(|| panic!("{name} is missing: scripts/test installs Debian's package"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn the_readmes_nginx_snippet_guards_an_app_with_auth_request() {
    let server = TestServer::start().await;
    let upstream = crate::gateway::Upstream::start();
    let snippet = readme_block("nginx", host(&upstream.base), host(&server.base));
    let nginx = Proxy::nginx(&snippet).await;
    guards_the_app(&server, &nginx.base, "nginx_ada", Names::Passed).await;
}

#[tokio::test]
async fn the_readmes_caddy_snippet_guards_an_app_with_forward_auth() {
    let server = TestServer::start().await;
    let upstream = crate::gateway::Upstream::start();
    let caddy = Proxy::caddy(host(&upstream.base), host(&server.base)).await;
    guards_the_app(&server, &caddy.base, "caddy_ada", Names::Removed).await;
}

/// What a proxy does with `X-Tessera-Email` and `X-Tessera-Username`.
#[derive(PartialEq)]
enum Names {
    /// Passed when the account has them, removed when not (nginx).
    Passed,
    /// Always removed (the README's Caddyfile copies only the headers every caller has).
    Removed,
}

/// What a proxy set up as the README says must do in front of the app at `proxy`: refuse a
/// request without a token, pass the caller's identity and never a client's spoofed one (an
/// email the account does not have included), and refuse the token once its session ended.
async fn guards_the_app(server: &TestServer, proxy: &str, username: &str, names: Names) {
    let get = |bearer: Option<String>, headers: Vec<(&'static str, &'static str)>| {
        let mut request = http_client().get(format!("{proxy}/echo"));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { read(request.send().await.unwrap()).await }
    };

    assert_eq!(get(None, vec![]).await.status, StatusCode::UNAUTHORIZED);
    let reply = server.post("/api/auth/register", json!({"username": username, "password": PASSWORD})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let login = server.post("/api/auth/login", json!({"username": username, "password": PASSWORD})).await;
    let tokens = tokens_of(&login);
    let claims = jwt_parts(&tokens.access).1;
    let spoofs = vec![
        ("x-tessera-user-id", "someone-else"),
        ("x-tessera-session-id", "another-session"),
        ("x-tessera-email", "boss@example.com"),
        ("x-tessera-username", "boss"),
        ("x-tessera-anonymous", "true"),
    ];
    let echo = get(Some(tokens.access.clone()), spoofs).await;
    assert_eq!(echo.status, StatusCode::OK, "{}", echo.body);
    let headers = &echo.body["headers"];
    assert_eq!(headers["x-tessera-user-id"], claims["sub"], "{headers}");
    assert_eq!(headers["x-tessera-session-id"], claims["sid"], "{headers}");
    assert_eq!(headers["x-tessera-anonymous"], "false", "{headers}");
    match names {
        Names::Passed => assert_eq!(headers["x-tessera-username"], username, "{headers}"),
        Names::Removed => assert!(headers.get("x-tessera-username").is_none(), "{headers}"),
    }
    assert!(headers.get("x-tessera-email").is_none(), "a spoofed email of an account without one: {headers}");

    let logout = server.send(Method::POST, "/api/auth/logout", Some(&tokens.access), None, &[]).await;
    assert_eq!(logout.status, StatusCode::OK);
    assert_eq!(get(Some(tokens.access.clone()), vec![]).await.status, StatusCode::UNAUTHORIZED);
}

/// The host:port of a base URL.
fn host(base: &str) -> &str {
    base.trim_start_matches("http://")
}
