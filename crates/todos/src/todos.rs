//! The todo lists, in memory, one per user, and the REST handlers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_verify::{Authenticated, Timestamp, UserId};
use tokio::sync::broadcast;

use crate::App;

const MAX_TITLE_CHARS: usize = 200;
const MAX_TODOS_PER_USER: usize = 1000;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Todo {
    pub id: u64,
    pub title: String,
    pub done: bool,
    /// RFC 3339 in UTC, as every tessera API answers times.
    pub created_at: String,
}

pub struct Todos {
    lists: Mutex<HashMap<UserId, Vec<Todo>>>,
    next_id: AtomicU64,
    /// Every new todo with its owner, for the sockets.
    added: broadcast::Sender<(UserId, Todo)>,
}

impl Default for Todos {
    fn default() -> Self {
        Self { lists: Mutex::default(), next_id: AtomicU64::new(1), added: broadcast::channel(1024).0 }
    }
}

impl Todos {
    pub fn of(&self, user: UserId) -> Vec<Todo> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner()).get(&user).cloned().unwrap_or_default()
    }

    fn add(&self, user: UserId, title: String) -> Option<Todo> {
        let todo = {
            let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
            let list = lists.entry(user).or_default();
            if list.len() >= MAX_TODOS_PER_USER {
                return None;
            }
            let todo = Todo {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                title,
                done: false,
                created_at: Timestamp::now().to_rfc3339(),
            };
            list.push(todo.clone());
            todo
        };
        let _ = self.added.send((user, todo.clone()));
        Some(todo)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<(UserId, Todo)> {
        self.added.subscribe()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTodo {
    title: String,
}

pub async fn list(State(app): State<App>, user: Authenticated) -> Json<Vec<Todo>> {
    Json(app.todos.of(user.user_id))
}

pub async fn add(State(app): State<App>, user: Authenticated, body: Result<Json<NewTodo>, JsonRejection>) -> Response {
    let Json(new) = match body {
        Ok(body) => body,
        Err(e) => return bad_request(&e.body_text()),
    };
    let title = new.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return bad_request(&format!("`title` must be 1 to {MAX_TITLE_CHARS} characters"));
    }
    match app.todos.add(user.user_id, title.to_owned()) {
        Some(todo) => (StatusCode::CREATED, Json(todo)).into_response(),
        None => {
            (StatusCode::CONFLICT, Json(json!({"error": "too_many_todos", "error_description": "this list is full"})))
                .into_response()
        }
    }
}

fn bad_request(description: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_request", "error_description": description})))
        .into_response()
}
