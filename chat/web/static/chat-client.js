// chat-client.js — a browser client for the chat server's wire protocol v1.
//
// An ES module with no dependencies. See docs/browser-client.md for the full guide.
//
//   import { ChatClient } from "/chat-client.js";
//   const client = new ChatClient();                 // ws(s)://<this host>/ws
//   client.addEventListener("item", (e) => show(e.detail));
//   await client.login("alice");                     // rejects with a ChatError (e.g. username_taken)
//   await client.join("general");
//   await client.send({ channel: "general", content: "hi" });
//
// The client keeps the session where every tab of the browser finds it (localStorage: username,
// session_id, epoch, channels), so a reload, a network change or a second tab logs in with
// `resume` and is attached to the same session: nobody sees it leave and join. Each tab keeps
// its own feed positions (the last seq seen of every log: channel name, or "@" for the own
// inbox) and its unsent messages in sessionStorage. When the connection drops it reconnects
// with exponential backoff, resumes the session, reopens the feed with `since` + `epoch`, and
// then dispatches `reconnected` saying how many missed messages were recovered, whether the
// server's store changed (`epochChanged`) and which `gap`s were reported. Messages carry a
// `client_id` and are sent again after a reconnect until the server has answered: the server
// stores each once.

export const PROTOCOL = "chat.v1.json";

/** An `error` frame from the server, or a local failure (`disconnected`, `closed`). */
export class ChatError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ChatError";
    this.code = code;
  }
}

const MAX_CREDIT = 2 ** 31 - 1;

/**
 * One open `stream` or `channel` interaction. Items arrive through `onNext`; `done` is a
 * promise that resolves at `complete` (or after `cancel()`) and rejects with a ChatError.
 */
export class Interaction {
  constructor(client, id, type, route, options) {
    this.client = client;
    this.id = id;
    this.type = type;
    this.route = route;
    this.onNext = options.onNext || (() => {});
    this.received = 0;
    this.open = true;
    // Automatic credit: with `credit: n` and `autoRequest` (default true) the client grants
    // n/2 more each time half of the window has been consumed, so at most n items are ever
    // outstanding. With `autoRequest: false` the caller grants credit itself (requestN).
    this.window = options.credit ?? null;
    this.autoRequest = options.autoRequest ?? true;
    this._consumed = 0;
    this.done = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.done.catch(() => {}); // callers that do not await `done` must not see unhandled rejections
  }

  /** Grant `n` more items of credit. */
  requestN(n) {
    if (!this.open) return;
    this.client._send({ type: "request_n", id: this.id, n: Math.min(n, MAX_CREDIT) });
  }

  /** Stop the interaction now; `done` resolves and frames still in flight are ignored. */
  cancel() {
    if (!this.open) return;
    this.client._send({ type: "cancel", id: this.id });
    this._end(null);
  }

  /** Send an item on a `channel` interaction. */
  send(data) {
    if (!this.open || this.type !== "channel") return;
    this.client._send({ type: "next", id: this.id, data });
  }

  /** Tell the server this side of a `channel` interaction sends no more items. */
  complete() {
    if (!this.open || this.type !== "channel") return;
    this.client._send({ type: "complete", id: this.id });
  }

  _next(data) {
    this.received += 1;
    try {
      this.onNext(data, this);
    } finally {
      if (this.window && this.autoRequest && this.open) {
        this._consumed += 1;
        const half = Math.max(1, Math.floor(this.window / 2));
        if (this._consumed >= half) {
          this.requestN(this._consumed);
          this._consumed = 0;
        }
      }
    }
  }

  _end(error) {
    if (!this.open) return;
    this.open = false;
    this.client._interactions.delete(this.id);
    if (error) this._reject(error);
    else this._resolve();
  }
}

const storageOr = (name) => {
  try {
    return typeof globalThis[name] === "undefined" ? null : globalThis[name];
  } catch {
    return null; // storage disabled (e.g. a sandboxed frame): reading it throws
  }
};

const DEFAULTS = {
  url: null, // default: ws(s)://<location.host>/ws
  storage: storageOr("sessionStorage"), // per tab: feed positions, epoch, unsent messages
  storageKey: "chat-client.v1",
  sharedStorage: storageOr("localStorage"), // per browser: the session, found by every tab
  sharedKey: "chat-client.v1.session",
  reconnect: true,
  backoff: { initial: 500, factor: 2, max: 15000, jitter: 0.2 },
  catchUpTimeout: 10000, // ms to wait for missed items after a reconnect before reporting
  logoutTimeout: 3000, // ms to wait for the `logout` answer before closing anyway
  takenRetries: 3, // reconnect attempts refused with username_taken before giving up
};

function readJSON(storage, key) {
  if (!storage) return null;
  try {
    const value = JSON.parse(storage.getItem(key) || "null");
    return value && typeof value === "object" ? value : null;
  } catch {
    return null; // unreadable: start afresh
  }
}

function writeJSON(storage, key, value) {
  if (!storage) return;
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, JSON.stringify(value));
  } catch {
    /* storage full or disabled: recovery then works only within this page's life */
  }
}

function randomHex(bytes) {
  const buffer = new Uint8Array(bytes);
  crypto.getRandomValues(buffer); // also in insecure contexts, unlike crypto.randomUUID
  return Array.from(buffer, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The client. An EventTarget dispatching CustomEvents:
 *  - `state`         `{state, attempt?, delay?, error?}`; state is one of
 *                    "connecting", "online", "reconnecting", "closed"
 *  - `conversations` `{rows, resumed, reconnect}`: the `conversations` rows read at every login,
 *                    dispatched before the feed opens (so no item arrives before it)
 *  - `session`       the login answer `{username, session_id, epoch, resumed}` plus
 *                    `conversations` (the rows), after every login (reopen your own streams here)
 *  - `item`          a feed item (`message`, `join`, `leave`, `gap`), with `recovered: true` when
 *                    it was missed while away (delivered while catching up)
 *  - `reconnected`   `{missed, gaps, epochChanged, channels, resumed, reconnect}` once the missed
 *                    items have arrived (`reconnect`: false when a new page resumed saved positions)
 *  - `sending`       `{client_id, data, queued}` a message is on its way (queued: not connected)
 *  - `sent`          `{client_id, data, answer}` the server stored it (`answer.duplicate`: it had)
 *  - `unsent`        `{client_id, data, error}` the server refused it, or the client logged out
 *  - `failed`        the ChatError that stopped reconnecting (e.g. the name is now taken)
 *  - `loggedout`     `{elsewhere}`: the session was logged out (elsewhere: by another tab)
 *  - `sessionavailable` `{username}`: another tab logged in while this client was logged out
 */
export class ChatClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff } };
    if (!this.options.url) {
      const url = new URL("/ws", location.href);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      this.options.url = url.href;
    }
    this.username = null;
    this.sessionId = null;
    this.resumed = false;
    this.epoch = null;
    this.since = {}; // log key -> last seq seen
    this.channels = new Set(); // the session's channels (re-joined when a session had ended)
    this.conversations = []; // the rows read at the last login
    this.state = "closed";
    this.ws = null;
    this._interactions = new Map();
    this._nextId = 1;
    this._feed = null;
    this._attempt = 0;
    this._taken = 0;
    this._timer = null;
    this._catchUp = null;
    this._wanted = false; // the user wants to be connected
    this._ready = false; // logged in on this connection: messages may be sent
    this._outbox = new Map(); // client_id -> {data, at, inflight, resolve?, reject?}
    this._restore();
    if (typeof window !== "undefined" && this.options.sharedStorage) {
      window.addEventListener("storage", (event) => {
        if (event.key !== this.options.sharedKey && event.key !== null) return;
        if (event.storageArea && event.storageArea !== this.options.sharedStorage) return;
        this._sharedChanged(readJSON(this.options.sharedStorage, this.options.sharedKey));
      });
    }
  }

  // ---- persistence ------------------------------------------------------------------
  //
  // Two records. In `sharedStorage` (localStorage: every tab of the browser sees it), under
  // `sharedKey`: `{username, session_id, epoch, channels}` — a reload, a second tab or a
  // reconnect logs in with `resume: session_id` and is attached to the same session. In
  // `storage` (sessionStorage: this tab only), under `storageKey`: `{username, epoch, since,
  // outbox}` — the feed positions of this tab, and the messages it has not seen stored yet.

  _restore() {
    const shared = readJSON(this.options.sharedStorage, this.options.sharedKey);
    const tab = readJSON(this.options.storage, this.options.storageKey);
    this.savedUsername = shared?.username || null;
    if (shared?.username) this.channels = new Set(shared.channels || []);
    if (tab && (!shared || tab.username === shared.username)) {
      this.savedUsername = this.savedUsername || tab.username || null;
      this.epoch = tab.epoch || null;
      this.since = tab.since && typeof tab.since === "object" ? tab.since : {};
      for (const entry of tab.outbox || []) {
        if (entry?.data?.client_id) this._outbox.set(entry.data.client_id, { data: entry.data, at: entry.at });
      }
    }
  }

  _save() {
    writeJSON(this.options.storage, this.options.storageKey, {
      username: this.username,
      epoch: this.epoch,
      since: this.since,
      outbox: [...this._outbox.values()].map(({ data, at }) => ({ data, at })),
    });
  }

  _saveShared() {
    if (!this.sessionId) return;
    writeJSON(this.options.sharedStorage, this.options.sharedKey, {
      username: this.username,
      session_id: this.sessionId,
      epoch: this.epoch,
      channels: [...this.channels],
    });
  }

  _shared() {
    return readJSON(this.options.sharedStorage, this.options.sharedKey);
  }

  /** Forget the saved session (username, session id, positions, channels, unsent messages);
   *  `{keepShared: true}` leaves the browser's shared record alone (another tab owns it). */
  forget({ keepShared = false } = {}) {
    const shared = this._shared();
    const ours = shared && (shared.session_id === this.sessionId || shared.username === (this.username || this.savedUsername));
    if (ours && !keepShared) writeJSON(this.options.sharedStorage, this.options.sharedKey, null);
    writeJSON(this.options.storage, this.options.storageKey, null);
    this.savedUsername = null;
    this.sessionId = null;
    this.since = {};
    this.channels = new Set();
    this.epoch = null;
    const error = new ChatError("closed", "logged out");
    for (const [clientId, entry] of this._outbox) this._unsent(clientId, entry, error);
    this._outbox.clear();
  }

  /** Another tab changed the shared session record. */
  _sharedChanged(record) {
    if (this._wanted && this.username) {
      if (!record || record.username !== this.username) {
        // Logged out in another tab: this tab logs out too (so the session ends at once).
        this.logout({ elsewhere: true });
      }
      return;
    }
    if (record?.username && !this._wanted) {
      this.dispatchEvent(new CustomEvent("sessionavailable", { detail: { username: record.username } }));
    }
  }

  // ---- connection ---------------------------------------------------------------------

  _setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...extra } }));
  }

  _open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.options.url, PROTOCOL);
      this.ws = ws;
      this._nextId = 1;
      this._ready = false;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve(ws);
      };
      ws.onmessage = (event) => this._receive(event.data);
      ws.onclose = (event) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this._ready = false;
        const error = new ChatError("disconnected",
          event.code === 1000 || event.code === 1005
            ? "the connection was closed"
            : `the connection was lost (${event.code}${event.reason ? ": " + event.reason : ""})`);
        for (const interaction of [...this._interactions.values()]) interaction._end(error);
        this._feed = null;
        if (!opened) reject(new ChatError("unreachable", "the server could not be reached"));
        else this._dropped(error);
      };
    });
  }

  _send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  _receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const interaction = this._interactions.get(frame.id);
    if (!interaction) return; // late frames after cancel, or `bad_frame` with id null
    switch (frame.type) {
      case "response":
        interaction._end(null, frame.data);
        break;
      case "next":
        interaction._next(frame.data);
        break;
      case "complete":
        interaction._end(null);
        break;
      case "error":
        interaction._end(new ChatError(frame.error?.code || "internal", frame.error?.message || "error"));
        break;
      default:
        break;
    }
  }

  /**
   * Connect and log in as `username` (with `{token}` on a server run with token auth; the token
   * is kept in memory for re-logins, never in storage). Resolves with the login answer; rejects
   * with a ChatError (`username_taken`, `invalid_data`, `unreachable`, `rate_limited`).
   *
   * When this browser holds a live session of `username` (another tab, or this one before a
   * reload), the login attaches to it (`resumed: true`): no leave or join, the channels are the
   * session's, and the feed resumes from this tab's positions. A different username starts
   * afresh.
   */
  async login(username, { token } = {}) {
    if (this.savedUsername && this.savedUsername !== username) this.forget();
    this.token = token ?? null; // for servers run with token auth; kept in memory only
    this._wanted = true;
    this._attempt = 0;
    this._taken = 0;
    this._setState("connecting");
    try {
      await this._open();
      return await this._session(username, false);
    } catch (error) {
      this._wanted = false;
      const ws = this.ws;
      this.ws = null;
      ws?.close();
      if (error.code === "username_taken") {
        // The saved session is gone and someone else holds the name: forget it.
        const shared = this._shared();
        if (shared?.username === username) writeJSON(this.options.sharedStorage, this.options.sharedKey, null);
        this.sessionId = null;
      }
      this._setState("closed", { error });
      throw error;
    }
  }

  /**
   * Log out: sends `logout` (the session ends at once when no other connection is attached),
   * closes for good and forgets the saved session, in every tab of this browser (they log out
   * too when they see the shared record go). Resolves when done.
   */
  async logout({ elsewhere = false } = {}) {
    this._wanted = false;
    clearTimeout(this._timer);
    this._finishCatchUp(true);
    const ws = this.ws;
    if (ws && this._ready) {
      const answer = this.request("logout");
      let timer;
      const timeout = new Promise((resolve) => {
        timer = setTimeout(resolve, this.options.logoutTimeout);
      });
      await Promise.race([answer.catch(() => {}), timeout]);
      clearTimeout(timer);
    }
    if (this.ws === ws) this.ws = null;
    this._ready = false;
    for (const interaction of [...this._interactions.values()]) {
      interaction._end(new ChatError("closed", "logged out"));
    }
    ws?.close(1000);
    this.forget({ keepShared: elsewhere }); // elsewhere: the shared record is no longer ours
    this.username = null;
    this._setState("closed");
    this.dispatchEvent(new CustomEvent("loggedout", { detail: { elsewhere } }));
  }

  /** Drop the connection as if the network failed (for tests and demos); it reconnects. */
  simulateDrop() {
    this.ws?.close(4000, "simulated drop");
  }

  /** Reconnect now instead of waiting for the backoff timer. */
  reconnectNow() {
    if (this.state !== "reconnecting") return;
    clearTimeout(this._timer);
    this._reconnect();
  }

  _dropped(error) {
    if (!this._wanted || !this.options.reconnect) {
      this._setState("closed", { error });
      return;
    }
    this._schedule(error);
  }

  _schedule(error) {
    const { initial, factor, max, jitter } = this.options.backoff;
    const base = Math.min(max, initial * factor ** this._attempt);
    const delay = Math.round(base * (1 - jitter + Math.random() * 2 * jitter));
    this._attempt += 1;
    this._setState("reconnecting", { attempt: this._attempt, delay, error });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._reconnect(), delay);
  }

  async _reconnect() {
    if (!this._wanted) return;
    this._setState("connecting", { attempt: this._attempt });
    try {
      await this._open();
    } catch (error) {
      if (this._wanted) this._schedule(error);
      return;
    }
    try {
      await this._session(this.username, true);
    } catch (error) {
      if (error.code === "disconnected" || !this._wanted) return; // _dropped scheduled the next try
      // username_taken: our session ended (linger passed, or the server restarted) and another
      // tab of this browser started the new one just now, or someone else took the name.
      // Retry a few times: each try reads the shared record again, which another tab updates.
      if (error.code === "username_taken" && this._taken < this.options.takenRetries) {
        this._taken += 1;
        const ws = this.ws;
        this.ws = null;
        ws?.close();
        this._schedule(error);
        return;
      }
      this._wanted = false;
      const ws = this.ws;
      this.ws = null;
      ws?.close();
      this._setState("closed", { error });
      const unsent = new ChatError(error.code, `not sent: ${error.message}`);
      for (const [clientId, entry] of this._outbox) this._unsent(clientId, entry, unsent);
      this._outbox.clear();
      this._save();
      this.dispatchEvent(new CustomEvent("failed", { detail: error }));
    }
  }

  async _session(username, reconnecting) {
    const shared = this._shared();
    // The freshest session id: another tab may have started a new session since ours ended.
    const resume = (shared?.username === username && shared.session_id) || this.sessionId;
    const data = { username };
    if (this.token) data.token = this.token;
    if (resume) data.resume = resume;
    const answer = await this.request("login", data);
    this._taken = 0;
    this.username = answer.username;
    this.sessionId = answer.session_id;
    this.resumed = !!answer.resumed;
    const epochChanged = this.epoch !== null && this.epoch !== answer.epoch;
    if (epochChanged) this.since = {};
    this.epoch = answer.epoch;
    const before = { ...this.since };

    // What the session is a member of, where every log stands, and the read positions.
    const rows = await this.collect("conversations");
    this.conversations = rows;
    const wanted = [...this.channels];
    if (this.resumed) {
      // Attached: the memberships are the session's. Another tab may have joined or left.
      this.channels = new Set(rows.filter((r) => r.channel !== null).map((r) => r.channel));
    }
    const targets = {}; // the catch-up marks: the last seq of each log at this moment
    for (const row of rows) {
      const key = row.channel === null ? "@" : row.channel;
      // A log this tab has no position in starts now (a new tab: history shows the past).
      // The inbox too: the feed would start "at its opening" otherwise, and a private message
      // sent while this client reconnects would never be delivered.
      if (this.since[key] === undefined) this.since[key] = row.last_seq;
      else if (this.since[key] < row.last_seq) targets[key] = row.last_seq;
      else if (this.since[key] > row.last_seq) this.since[key] = row.last_seq; // a store rewound
    }
    for (const key of Object.keys(this.since)) {
      if (key !== "@" && !this.channels.has(key)) delete this.since[key]; // left meanwhile
    }
    this._catchUp = { before, targets, missed: 0, gaps: [], epochChanged, reconnect: reconnecting, resumed: this.resumed };
    this.dispatchEvent(new CustomEvent("conversations", { detail: { rows, resumed: this.resumed, reconnect: reconnecting } }));
    this._openFeed();
    this._attempt = 0;
    this._save();
    this._saveShared();
    this._setState("online");

    // A session that had ended (or a new one): join the channels again. Requests take effect
    // in order, so the messages re-sent below are accepted after these joins.
    const joins = this.resumed ? [] : wanted.map((channel) => ({ channel, answer: this.request("channel.join", { channel }) }));
    this._ready = true;
    for (const [clientId, entry] of this._outbox) {
      if (!entry.inflight) this._transmit(clientId, entry);
    }
    const joined = await Promise.allSettled(joins.map((j) => j.answer));
    joined.forEach((result, i) => {
      const { channel } = joins[i];
      if (result.status === "fulfilled") {
        if (this._catchUp) this._catchUp.targets[channel] = result.value.seq;
      } else if (result.reason?.code !== "disconnected") {
        this.channels.delete(channel); // e.g. the channel limit: not a member any more
        delete this.since[channel];
      }
    });
    if (joins.length) {
      this._save();
      this._saveShared();
    }
    const detail = { ...answer, conversations: rows };
    this.dispatchEvent(new CustomEvent("session", { detail }));
    if (this._catchUp) {
      this._catchUp.channels = [...this.channels];
      this._catchUp.timer = setTimeout(() => this._finishCatchUp(), this.options.catchUpTimeout);
      this._checkCatchUp();
    }
    return detail;
  }

  _openFeed() {
    const data = { epoch: this.epoch };
    if (Object.keys(this.since).length) data.since = { ...this.since };
    this._feed = this.stream("messages", data, { onNext: (item) => this._item(item) });
  }

  _item(item) {
    const key = item.channel === null || item.channel === undefined ? "@" : item.channel;
    const last = item.kind === "gap" ? item.last : item.seq;
    if (item.kind !== "gap" && this.since[key] !== undefined && item.seq <= this.since[key]) return; // seen
    this.since[key] = last;
    const catchUp = this._catchUp;
    let recovered = false;
    if (catchUp && catchUp.targets[key] !== undefined && last <= catchUp.targets[key]) {
      recovered = true;
      if (item.kind === "message") catchUp.missed += 1;
      if (item.kind === "gap") catchUp.gaps.push(item);
    } else if (catchUp && item.kind === "gap") {
      catchUp.gaps.push(item);
    }
    // The session's own joins and leaves after this login are news: another connection of the
    // session (a tab, a device) joined or left. Earlier ones (recovered) are history.
    if (!recovered && key !== "@" && item.from === this.username) {
      if (item.kind === "join" && !this.channels.has(key)) {
        this.channels.add(key);
        this._saveShared();
      } else if (item.kind === "leave") {
        this.channels.delete(key);
        delete this.since[key];
        this._saveShared();
      }
    }
    this._save();
    this.dispatchEvent(new CustomEvent("item", { detail: { ...item, recovered } }));
    if (catchUp) this._checkCatchUp();
  }

  _checkCatchUp() {
    const catchUp = this._catchUp;
    if (!catchUp || !catchUp.channels) return;
    for (const [key, target] of Object.entries(catchUp.targets)) {
      if ((this.since[key] ?? 0) < target) return;
    }
    this._finishCatchUp();
  }

  _finishCatchUp(silently = false) {
    const catchUp = this._catchUp;
    if (!catchUp) return;
    this._catchUp = null;
    clearTimeout(catchUp.timer);
    if (silently) return;
    const { missed, gaps, epochChanged, channels, resumed, reconnect } = catchUp;
    const hadPositions = Object.keys(catchUp.before).length > 0 || epochChanged;
    if (!reconnect && !hadPositions) return; // a first login: nothing was missed
    this.dispatchEvent(new CustomEvent("reconnected", {
      detail: { missed, gaps, epochChanged, channels, resumed, reconnect },
    }));
  }

  // ---- sending, exactly once ------------------------------------------------------------

  /** A new `client_id`: 128 random bits, in the characters the protocol allows. */
  newClientId() {
    return `c${randomHex(16)}`;
  }

  /**
   * Send `{channel, content}` or `{user, content}` (optionally with your own `client_id`).
   * Resolves with `{channel, seq, ts, duplicate}` once stored — also when that takes a reconnect:
   * a message whose answer was lost is sent again with the same `client_id`, and the server
   * stores it once. Rejects with a ChatError when the server refuses it. Events `sending`,
   * `sent` and `unsent` report the same, also for messages restored after a reload.
   */
  send(target) {
    const data = { ...target };
    if (!data.client_id) data.client_id = this.newClientId();
    const clientId = data.client_id;
    return new Promise((resolve, reject) => {
      const entry = { data, at: Date.now(), inflight: false, resolve, reject };
      this._outbox.set(clientId, entry);
      this._save();
      this.dispatchEvent(new CustomEvent("sending", { detail: { client_id: clientId, data, queued: !this._ready } }));
      if (this._ready) this._transmit(clientId, entry);
    });
  }

  /** The messages not yet known to be stored (`data` of each), oldest first. */
  pending() {
    return [...this._outbox.values()].map((entry) => entry.data);
  }

  _transmit(clientId, entry) {
    entry.inflight = true;
    this.request("message", entry.data).then((answer) => {
      entry.inflight = false;
      if (this._outbox.get(clientId) !== entry) return;
      this._outbox.delete(clientId);
      this._save();
      entry.resolve?.(answer);
      this.dispatchEvent(new CustomEvent("sent", { detail: { client_id: clientId, data: entry.data, answer } }));
    }, (error) => {
      entry.inflight = false;
      if (this._outbox.get(clientId) !== entry) return;
      if (error.code === "disconnected") return; // stays in the outbox: sent again after the reconnect
      this._outbox.delete(clientId);
      this._save();
      this._unsent(clientId, entry, error);
    });
  }

  _unsent(clientId, entry, error) {
    entry.reject?.(error);
    this.dispatchEvent(new CustomEvent("unsent", { detail: { client_id: clientId, data: entry.data, error } }));
  }

  // ---- the four interaction types -----------------------------------------------------

  _newId() {
    const id = this._nextId;
    this._nextId += 1;
    return id;
  }

  /** `request`: resolves with the `response` data, rejects with a ChatError. */
  request(route, data) {
    const id = this._newId();
    const interaction = new Interaction(this, id, "request", route, {});
    let answer;
    interaction._end = (error, value) => {
      if (!interaction.open) return;
      interaction.open = false;
      this._interactions.delete(id);
      answer = value;
      if (error) interaction._reject(error);
      else interaction._resolve();
    };
    this._interactions.set(id, interaction);
    const frame = { type: "request", id, route };
    if (data !== undefined) frame.data = data;
    if (!this._send(frame)) interaction._end(new ChatError("disconnected", "not connected to the server"));
    return interaction.done.then(() => answer);
  }

  /** `fire`: fire-and-forget. Returns false when not connected (the frame was not sent). */
  fire(route, data) {
    const frame = { type: "fire", route };
    if (data !== undefined) frame.data = data;
    return this._send(frame);
  }

  /**
   * `stream`: returns an Interaction. options: `onNext(item, interaction)`, `credit` (initial
   * credit; absent = unlimited), `autoRequest` (default true: re-grant credit as items arrive).
   */
  stream(route, data, options = {}) {
    return this._start("stream", route, data, options);
  }

  /** `channel`: like `stream`, and the returned Interaction can `send(data)` and `complete()`. */
  channel(route, data, options = {}) {
    return this._start("channel", route, data, options);
  }

  _start(type, route, data, options) {
    const id = this._newId();
    const interaction = new Interaction(this, id, type, route, options);
    this._interactions.set(id, interaction);
    const frame = { type, id, route };
    if (data !== undefined) frame.data = data;
    if (options.credit) frame.credit = options.credit;
    if (!this._send(frame)) interaction._end(new ChatError("disconnected", "not connected to the server"));
    return interaction;
  }

  /** All items of a finite stream (`channels`, `channel.users`, `history`), as an array. */
  async collect(route, data) {
    const items = [];
    const interaction = this.stream(route, data, { onNext: (item) => items.push(item) });
    await interaction.done;
    return items;
  }

  // ---- conveniences -------------------------------------------------------------------

  /** Join (and create) a channel; a session that ended re-joins it at the next login. */
  async join(channel) {
    const answer = await this.request("channel.join", { channel });
    this.channels.add(channel);
    this._save();
    this._saveShared();
    return answer;
  }

  async leave(channel) {
    this.channels.delete(channel);
    delete this.since[channel];
    this._save();
    this._saveShared();
    return this.request("channel.leave", { channel });
  }

  /** Move the read position of a channel (`null`: the inbox) to `seq`; it never moves back. */
  read(channel, seq) {
    return this.request("read", { channel, seq });
  }

  /** `history`: `{channel}`, `{user}` (one private conversation) or `{}` (the inbox), with
   *  `before`, `after`, `limit`. */
  history(query = {}) {
    return this.collect("history", query);
  }
}
