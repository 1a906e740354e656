// Type declarations of tessera.js (crates/server/web/tessera.js, served by tessera at
// /tessera.js). See that file's header for the behaviour in full.

/** A user as tessera describes it. `session_id` is there when it came from GET /me. */
export interface User {
  id: string;
  email: string | null;
  username: string | null;
  is_anonymous: boolean;
  created_at: string;
  session_id?: string;
}

/** One of the user's sessions (GET /api/auth/sessions). */
export interface Session {
  id: string;
  created_at: string;
  last_used_at: string;
  expires_at: string;
  user_agent: string | null;
  ip: string | null;
  current: boolean;
}

/** Sign in with an email or a username. */
export type Credentials = { email: string; username?: never; password: string } | { username: string; email?: never; password: string };

/** An account's names and password: an email, a username, or both. */
export interface NewAccount {
  email?: string;
  username?: string;
  password: string;
}

/**
 * Why a session ended:
 * - `ended`: tessera refused the refresh token (revoked, reused, signed out in another browser
 *   or app, or expired; tessera does not say which);
 * - `cookie_missing`: the browser no longer sends the refresh cookie (cleared, expired, or
 *   deleted by a sign-out on a page of another origin);
 * - `signed_out_elsewhere`: another tab of this origin signed out;
 * - `account_deleted`: another tab of this origin deleted the account;
 * - `replaced`: the cookie now holds another session (a sign-in on a page of another origin);
 * - `cookie_conflict`: the browser sent several refresh cookies (another site of tessera's host,
 *   on another port, set one) and tessera cleared them all: sign in again.
 */
export type SessionEndReason =
  | "ended"
  | "cookie_missing"
  | "signed_out_elsewhere"
  | "account_deleted"
  | "replaced"
  | "cookie_conflict";

export interface TesseraEvents {
  /** A sign-in here (`restored` after restore()) or in another tab of this origin (`otherTab`). */
  signed_in: { user: User | null; restored?: true; otherTab?: true };
  /** A new access token (from this tab's refresh, or another tab's). */
  token_refreshed: { expiresAt: number; otherTab?: true };
  /** The user changed in this session: a guest saved its account. */
  user_updated: { user: User; otherTab?: true };
  /** This client signed out (`reason: "account_deleted"` after deleteAccount()). */
  signed_out: { everywhere?: boolean; reason?: "account_deleted" };
  /** Once per session; then nothing more happens until restore() or a sign-in. */
  session_ended: { reason: SessionEndReason };
  /** A background refresh failed for another reason than the session's end; it is retried. */
  error: { error: Error };
}

export interface ClientOptions {
  /** tessera's base URL, e.g. "https://auth.example.com". Default: `location.origin`. */
  url?: string;
  /** Advanced (tests, unusual hosts): the fetch to use. */
  fetch?: typeof globalThis.fetch;
  /** Advanced: the clock, in milliseconds since the epoch. */
  now?: () => number;
  /** Advanced: timers. */
  setTimeout?: (callback: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
  /** Advanced: a LockManager-like object (default `navigator.locks`); null: no cross-tab lock. */
  locks?: { request<T>(name: string, callback: () => Promise<T>): Promise<T> } | null;
  /** Advanced: a BroadcastChannel-like object (default: a new BroadcastChannel); null: none. */
  channel?: {
    postMessage(message: unknown): void;
    addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
    removeEventListener?(type: "message", listener: (event: { data: unknown }) => void): void;
  } | null;
  /**
   * Advanced: the link to tessera's frame, through which a page of another origin takes
   * tessera's refresh lock and hears its tab channel. Default: a hidden iframe of
   * `${url}/tessera-frame.html` when `url` is of another origin than the page; null: no frame.
   */
  frame?: ((
    src: string,
    onMessage: (message: unknown) => void,
    onLoad: () => void,
  ) => { send(message: unknown): void; remove?(): void } | null) | null;
}

export interface TesseraClient {
  readonly url: string;
  /** The last known user: the sign-in's `user`, or the last GET /me. Null when signed out or ended. */
  readonly user: User | null;
  readonly state: "signed_out" | "signed_in" | "ended";
  /** Why the session ended, while `state` is "ended". */
  readonly endReason: SessionEndReason | null;
  /** When the access token in memory expires (ms since the epoch), or null. */
  readonly expiresAt: number | null;

  /** Resumes the session the refresh cookie holds (one refresh, then GET /me); null when none. */
  restore(): Promise<User | null>;
  signIn(credentials: Credentials): Promise<User>;
  /** Registers, then signs in. */
  signUp(account: NewAccount): Promise<User>;
  /** Starts a guest session: only ever when called. */
  signInAsGuest(): Promise<User>;
  /** Saves a guest's account in place: same user, same session. */
  upgrade(account: NewAccount): Promise<User>;
  signOut(options?: { everywhere?: boolean }): Promise<void>;
  changePassword(current: string, next: string): Promise<{ password_changed: true; sessions_ended: number }>;
  /** A guest gives no password. */
  deleteAccount(password?: string): Promise<{ deleted: true }>;
  listSessions(): Promise<Session[]>;
  revokeSession(id: string): Promise<{ revoked: true }>;
  settings(): Promise<{ allow_anonymous: boolean }>;
  /** GET /me. */
  getUser(): Promise<User>;
  /**
   * fetch with `Authorization: Bearer`: refreshed first when due; on a 401 that says the token is
   * no good (UNAUTHORIZED, RFC 6750 invalid_token, or no error envelope), one refresh and one
   * retry. Other 401s, and the retry's answer, are returned as they are.
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** A valid access token, refreshed when due; `forceRefresh` when the one you had was refused. */
  getToken(options?: { forceRefresh?: boolean }): Promise<string>;
  /**
   * `["tessera", "tessera.bearer.<access token>"]` with a valid token, for each (re)connect of a
   * WebSocket or Socket.IO client through `tessera gateway`. Rejects with `SessionEndedError`
   * once the session ended: stop reconnecting.
   */
  socketProtocols(): Promise<string[]>;
  on<K extends keyof TesseraEvents>(name: K, callback: (detail: TesseraEvents[K]) => void): () => void;
  /** Stops timers and leaves the tab channel. */
  close(): void;
}

export function createClient(options?: ClientOptions): TesseraClient;

/** tessera answered with an error (`code` from its envelope, "UNAVAILABLE" without one). */
export class TesseraError extends Error {
  readonly name: "TesseraError";
  readonly code: string;
  readonly status: number;
  readonly requestId?: string;
}

/** There is no session to act for: it ended (`reason`), or this client is not signed in. */
export class SessionEndedError extends Error {
  readonly name: "SessionEndedError";
  readonly reason: SessionEndReason | "not_signed_in";
}
