//! The command-line client: `login`, `status`, `logout`, `whoami`, `token`, `sessions`, `passwd`.
//!
//! Tokens live in `$XDG_CONFIG_HOME/tessera/tokens.json` (default `~/.config/tessera/`), mode
//! 0600. The server is `--server`, else `TESSERA_SERVER`, else the one saved at login, else
//! `http://127.0.0.1:8080`. Every failure is one line on stderr and one of the exit codes of
//! [`Exit`].

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tessera_client::{Client, Error, ErrorCode, FileStore, LoginName, Logout, TokenStore, unix_now};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Exit codes of the client commands (clap's usage errors also exit with 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    NotLoggedIn = 3,
    SessionExpired = 4,
    InvalidCredentials = 5,
    Unreachable = 6,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// A failure: its exit code and its one-line message.
pub struct Failed(pub Exit, pub String);

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        match e {
            Error::NotLoggedIn => Failed(Exit::NotLoggedIn, "not logged in; run 'tessera login'".into()),
            Error::SessionExpired => {
                Failed(Exit::SessionExpired, "your session has ended; run 'tessera login' to sign in again".into())
            }
            Error::InvalidCredentials => Failed(Exit::InvalidCredentials, "invalid email or password".into()),
            e @ Error::Unreachable { .. } => Failed(Exit::Unreachable, e.to_string()),
            Error::Api { message, .. } => Failed(Exit::Failure, message),
            other => Failed(Exit::Failure, other.to_string()),
        }
    }
}

type Outcome = Result<Exit, Failed>;

#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// The tessera server [default: $TESSERA_SERVER, else the server of the saved login, else
    /// http://127.0.0.1:8080].
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The account's email (prompted for on a terminal when neither it nor --username is given).
    #[arg(long)]
    pub email: Option<String>,
    /// Log in with the account's username instead of an email.
    #[arg(long, value_name = "NAME", conflicts_with = "email")]
    pub username: Option<String>,
    /// Prompt for email (unless --username is given) and password even when they could come
    /// from elsewhere.
    #[arg(long, conflicts_with = "password_stdin")]
    pub interactive: bool,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PasswdArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Read the current password from the first line of standard input and the new one from the
    /// second, instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// End this session (one of yours) instead of listing them.
    #[arg(long, value_name = "ID")]
    pub revoke: Option<String>,
}

/// Runs a client command and turns its outcome into output and an exit code.
pub fn run(command: impl AsyncFnOnce() -> Outcome) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: cannot start: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(command()) {
        Ok(exit) => exit.into(),
        Err(Failed(exit, message)) => {
            eprintln!("tessera: {message}");
            exit.into()
        }
    }
}

fn token_file() -> Result<FileStore, Failed> {
    FileStore::default_path()
        .map(FileStore::new)
        .ok_or_else(|| Failed(Exit::Failure, "cannot find a config directory: set HOME or XDG_CONFIG_HOME".into()))
}

/// The client for `--server`, else `TESSERA_SERVER`, else the saved server, else the default.
fn client(arg: &ServerArg) -> Result<Client, Failed> {
    let store = token_file()?;
    let from_env = std::env::var("TESSERA_SERVER").ok().filter(|s| !s.trim().is_empty());
    let saved = || store.load().ok().flatten().map(|t| t.server);
    let server = arg.server.clone().or(from_env).or_else(saved).unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(Failed(Exit::Usage, format!("the server must be an http:// or https:// URL, not `{server}`")));
    }
    Ok(Client::new(&server, store)?)
}

pub async fn login(args: LoginArgs) -> Outcome {
    let client = client(&args.server)?;
    let on_terminal = std::io::stdin().is_terminal();
    let by_username = args.email.is_none() && args.username.is_some();
    let value = match (args.email, args.username) {
        (Some(email), _) => email,
        (None, Some(username)) => username,
        (None, None) if args.interactive || on_terminal => prompt_line("Email: ")?,
        (None, None) => {
            return Err(Failed(
                Exit::Usage,
                "no email or username: pass --email or --username, or run on a terminal".into(),
            ));
        }
    };
    let name = if by_username { LoginName::Username(value.trim()) } else { LoginName::Email(value.trim()) };
    let password = if args.password_stdin {
        read_stdin_line("the password")?
    } else if args.interactive || on_terminal {
        prompt_hidden("Password: ")?
    } else {
        return Err(Failed(Exit::Usage, "no password: pass --password-stdin or run on a terminal".into()));
    };
    let tokens = match client.login_as(name, &password).await {
        Err(Error::InvalidCredentials) if by_username => {
            return Err(Failed(Exit::InvalidCredentials, "invalid username or password".into()));
        }
        other => other?,
    };
    println!("Logged in to {} as {}.", client.server(), tokens.display_name());
    Ok(Exit::Ok)
}

/// Changes the password: the current one, then the new one twice (hidden) on a terminal, or two
/// lines of standard input with `--password-stdin`. Every other session of the user ends.
pub async fn passwd(args: PasswdArgs) -> Outcome {
    let client = client(&args.server)?;
    let tokens = client.tokens()?.ok_or(Error::NotLoggedIn)?;
    if tokens.is_anonymous {
        return Err(guest_has_no_password());
    }
    let (current, new) = if args.password_stdin {
        (read_stdin_line("the current password")?, read_stdin_line("the new password")?)
    } else if std::io::stdin().is_terminal() {
        let current = prompt_hidden("Current password: ")?;
        let new = prompt_hidden("New password: ")?;
        if prompt_hidden("Repeat the new password: ")? != new {
            return Err(Failed(Exit::Usage, "the new passwords do not match; nothing changed".into()));
        }
        (current, new)
    } else {
        return Err(Failed(Exit::Usage, "no passwords: pass --password-stdin or run on a terminal".into()));
    };
    let ended = match client.change_password(&current, &new).await {
        Ok(ended) => ended,
        Err(Error::InvalidCredentials) => {
            return Err(Failed(Exit::InvalidCredentials, "the current password is wrong; nothing changed".into()));
        }
        Err(Error::Api { code: ErrorCode::GuestAccount, .. }) => return Err(guest_has_no_password()),
        Err(e) => return Err(e.into()),
    };
    let others = match ended {
        0 => "no other session was open".to_owned(),
        1 => "1 other session ended".to_owned(),
        n => format!("{n} other sessions ended"),
    };
    println!("Password changed; {others}. This session stays signed in.");
    Ok(Exit::Ok)
}

fn guest_has_no_password() -> Failed {
    Failed(Exit::Failure, "this is a guest session: it has no password to change".into())
}

pub async fn status(arg: ServerArg) -> Outcome {
    let client = client(&arg)?;
    println!("Server: {}", client.server());
    let Some(tokens) = client.tokens()? else {
        println!("Authenticated: false (run 'tessera login' to authenticate)");
        return Ok(Exit::NotLoggedIn);
    };
    println!("Authenticated: true");
    match (&tokens.username, tokens.email.is_empty()) {
        (Some(username), false) => println!("User: {} (username {username})", tokens.email),
        _ => println!("User: {}", tokens.display_name()),
    }
    let left = tokens.time_left(unix_now());
    if left.is_zero() {
        println!("Access token: expired (renewed on next use)");
    } else {
        println!("Access token: valid for {}", human(left));
    }
    Ok(Exit::Ok)
}

pub async fn logout(arg: ServerArg) -> Outcome {
    let client = client(&arg)?;
    match client.logout().await {
        Ok(Logout::Ended) => println!("Logged out of {}.", client.server()),
        Ok(Logout::AlreadyEnded) => println!("Logged out (the session had already ended on the server)."),
        Ok(Logout::LocalOnly { reason }) => {
            return Err(Failed(
                Exit::Unreachable,
                format!(
                    "could not reach the server at {} ({reason}); removed the local tokens anyway — the session stays valid on the server until it expires",
                    client.server()
                ),
            ));
        }
        Err(Error::NotLoggedIn) => println!("Not logged in; nothing to do."),
        Err(e) => return Err(e.into()),
    }
    Ok(Exit::Ok)
}

pub async fn whoami(arg: ServerArg) -> Outcome {
    let me = client(&arg)?.me().await?;
    let name = match (&me.email, &me.username) {
        (Some(email), _) => email.clone(),
        (None, Some(username)) => username.clone(),
        (None, None) => "guest".to_owned(),
    };
    println!("{name} (user {}, session {})", me.id, me.session_id);
    Ok(Exit::Ok)
}

pub async fn token(arg: ServerArg) -> Outcome {
    println!("{}", client(&arg)?.access_token().await?);
    Ok(Exit::Ok)
}

pub async fn sessions(args: SessionsArgs) -> Outcome {
    let client = client(&args.server)?;
    if let Some(id) = args.revoke {
        client.revoke_session(&id).await?;
        println!("Revoked session {id}.");
        return Ok(Exit::Ok);
    }
    let sessions = client.sessions().await?;
    println!("  {:<36}  {:<17}  {:<17}  {:<15}  DEVICE", "ID", "CREATED", "LAST USED", "IP");
    for s in sessions {
        let marker = if s.current { "*" } else { " " };
        let ip = s.ip.unwrap_or_default();
        let device = s.user_agent.unwrap_or_default();
        println!(
            "{marker} {:<36}  {:<17}  {:<17}  {ip:<15}  {device}",
            s.id,
            minute(&s.created_at),
            minute(&s.last_used_at)
        );
    }
    Ok(Exit::Ok)
}

/// `2026-11-23T10:45:16.863Z` → `2026-11-23 10:45Z`.
fn minute(rfc3339: &str) -> String {
    match rfc3339.get(..16) {
        Some(prefix) => format!("{}Z", prefix.replace('T', " ")),
        None => rfc3339.to_owned(),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn prompt_line(prompt: &str) -> Result<String, Failed> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failed(Exit::Failure, format!("cannot read input: {e}")))?;
    Ok(line.trim().to_owned())
}

fn prompt_hidden(prompt: &str) -> Result<String, Failed> {
    rpassword::prompt_password(prompt).map_err(|e| Failed(Exit::Failure, format!("cannot read the password: {e}")))
}

/// The next line of standard input (`what` names it in errors), without its line ending.
fn read_stdin_line(what: &str) -> Result<String, Failed> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failed(Exit::Failure, format!("cannot read {what} from standard input: {e}")))?;
    let value = line.strip_suffix('\n').unwrap_or(&line);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(Failed(Exit::Usage, format!("standard input held no line with {what}")));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(14 * 60 + 32)), "14m 32s");
        assert_eq!(human(Duration::from_secs(2 * 3600 + 5 * 60)), "2h 5m");
    }

    #[test]
    fn timestamps_are_shown_to_the_minute() {
        assert_eq!(minute("2026-11-23T10:45:16.863Z"), "2026-11-23 10:45Z");
        assert_eq!(minute("short"), "short");
    }
}
