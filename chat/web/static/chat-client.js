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
// The client owns one `messages` feed per connection and keeps the last seq seen of every
// log (channel name, or "@" for the own inbox) with the server's `epoch` in sessionStorage.
// When the connection drops it reconnects with exponential backoff, logs in again, reopens
// the feed with `since` + `epoch`, re-joins its channels, and then dispatches `reconnected`
// saying how many missed messages were recovered, whether the server's store changed
// (`epochChanged`: nothing from before can be recovered) and which `gap`s were reported.

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

const DEFAULTS = {
  url: null, // default: ws(s)://<location.host>/ws
  storage: typeof sessionStorage === "undefined" ? null : sessionStorage,
  storageKey: "chat-client.v1",
  reconnect: true,
  backoff: { initial: 500, factor: 2, max: 15000, jitter: 0.2 },
  catchUpTimeout: 10000, // ms to wait for missed items after a reconnect before reporting
};

/**
 * The client. An EventTarget dispatching CustomEvents:
 *  - `state`       detail `{state, attempt?, delay?, error?}`; state is one of
 *                  "connecting", "online", "reconnecting", "closed"
 *  - `session`     detail: the login answer `{username, session_id, epoch}` (after every login,
 *                  also after a reconnect: reopen your own streams here)
 *  - `item`        detail: a feed item (`message`, `join`, `leave`, `gap`), with
 *                  `recovered: true` when it was delivered while catching up after a reconnect
 *  - `reconnected` detail `{missed, gaps, epochChanged, channels}`
 *  - `failed`      detail: the ChatError that stopped reconnecting (e.g. the name is now taken)
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
    this.epoch = null;
    this.since = {}; // log key -> last seq seen
    this.channels = new Set(); // channels this client has joined (re-joined after a reconnect)
    this.state = "closed";
    this.ws = null;
    this._interactions = new Map();
    this._nextId = 1;
    this._feed = null;
    this._attempt = 0;
    this._timer = null;
    this._catchUp = null;
    this._wanted = false; // the user wants to be connected
    this._restore();
  }

  // ---- persistence ------------------------------------------------------------------

  _restore() {
    const { storage, storageKey } = this.options;
    if (!storage) return;
    try {
      const saved = JSON.parse(storage.getItem(storageKey) || "null");
      if (saved && typeof saved === "object") {
        this.savedUsername = saved.username || null;
        this.epoch = saved.epoch || null;
        this.since = saved.since || {};
        this.channels = new Set(saved.channels || []);
      }
    } catch {
      /* unreadable storage: start afresh */
    }
  }

  _save() {
    const { storage, storageKey } = this.options;
    if (!storage) return;
    try {
      storage.setItem(storageKey, JSON.stringify({
        username: this.username,
        epoch: this.epoch,
        since: this.since,
        channels: [...this.channels],
      }));
    } catch {
      /* storage full or disabled: recovery then works only within this page's life */
    }
  }

  /** Forget the saved session (username, positions, channels). */
  forget() {
    this.options.storage?.removeItem(this.options.storageKey);
    this.savedUsername = null;
    this.since = {};
    this.channels = new Set();
    this.epoch = null;
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
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve(ws);
      };
      ws.onmessage = (event) => this._receive(event.data);
      ws.onclose = (event) => {
        if (this.ws !== ws) return;
        this.ws = null;
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
   * is kept in memory for re-logins, never in storage). Resolves with the login answer; rejects with a
   * ChatError (`username_taken`, `invalid_data`, `unreachable`). Channels and positions
   * saved in sessionStorage for the same username are resumed (re-joined, missed items
   * delivered); a different username starts afresh.
   */
  async login(username, { token } = {}) {
    if (this.savedUsername && this.savedUsername !== username) this.forget();
    this.token = token ?? null; // for servers run with token auth; kept in memory only
    this._wanted = true;
    this._attempt = 0;
    this._setState("connecting");
    try {
      await this._open();
      return await this._session(username, false);
    } catch (error) {
      this._wanted = false;
      const ws = this.ws;
      this.ws = null;
      ws?.close();
      this._setState("closed", { error });
      throw error;
    }
  }

  /** Close the connection for good (no reconnect) and forget the saved session. */
  logout() {
    this._wanted = false;
    clearTimeout(this._timer);
    const ws = this.ws;
    this.ws = null;
    for (const interaction of [...this._interactions.values()]) {
      interaction._end(new ChatError("closed", "logged out"));
    }
    ws?.close(1000);
    this.forget();
    this.username = null;
    this._setState("closed");
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
      this._schedule(error);
      return;
    }
    try {
      await this._session(this.username, true);
    } catch (error) {
      if (error.code === "disconnected") return; // _dropped already scheduled the next try
      // username_taken: the server may not have noticed the old connection's end yet
      if (error.code === "username_taken" && this._attempt < 8) {
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
      this.dispatchEvent(new CustomEvent("failed", { detail: error }));
    }
  }

  async _session(username, reconnecting) {
    const answer = await this.request("login", this.token ? { username, token: this.token } : { username });
    this.username = answer.username;
    const epochChanged = this.epoch !== null && this.epoch !== answer.epoch;
    if (epochChanged) this.since = {};
    this.epoch = answer.epoch;
    const before = { ...this.since };
    const resuming = reconnecting || Object.keys(before).length > 0 || this.channels.size > 0;
    // The catch-up targets: the last seq of every log at this moment.
    // The inbox feed starts at its opening unless `since["@"]` says otherwise, so a client
    // that never received a private message must still learn its inbox position, or a
    // message sent to it while it is disconnected would never be delivered.
    const targets = {};
    try {
      const last = await this.collect("history", { limit: 1 });
      const lastSeq = last.length ? last[last.length - 1].seq : 0;
      if (before["@"] === undefined) this.since["@"] = lastSeq;
      else if (resuming) targets["@"] = lastSeq;
    } catch {
      /* history unavailable: the inbox is still delivered live, just not counted */
    }
    this._catchUp = resuming ? { before, targets, missed: 0, gaps: [], epochChanged } : null;
    this._openFeed();
    this._attempt = 0;
    this._save();
    this._setState("online");
    const channels = [...this.channels];
    const joined = await Promise.allSettled(channels.map((channel) => this.request("channel.join", { channel })));
    joined.forEach((result, i) => {
      if (result.status === "fulfilled" && this._catchUp) this._catchUp.targets[channels[i]] = result.value.seq;
    });
    this.dispatchEvent(new CustomEvent("session", { detail: answer }));
    if (this._catchUp) {
      this._catchUp.channels = channels;
      this._catchUp.timer = setTimeout(() => this._finishCatchUp(), this.options.catchUpTimeout);
      this._checkCatchUp();
    }
    return answer;
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
    if (item.kind === "leave" && item.from === this.username && !this.channels.has(key)) {
      delete this.since[key];
    } else {
      this.since[key] = last;
    }
    const catchUp = this._catchUp;
    let recovered = false;
    if (catchUp && catchUp.targets[key] !== undefined && last <= catchUp.targets[key]) {
      recovered = true;
      if (item.kind === "message") catchUp.missed += 1;
      if (item.kind === "gap") catchUp.gaps.push(item);
    } else if (catchUp && item.kind === "gap") {
      catchUp.gaps.push(item);
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

  _finishCatchUp() {
    const catchUp = this._catchUp;
    if (!catchUp) return;
    this._catchUp = null;
    clearTimeout(catchUp.timer);
    this.dispatchEvent(new CustomEvent("reconnected", {
      detail: { missed: catchUp.missed, gaps: catchUp.gaps, epochChanged: catchUp.epochChanged, channels: catchUp.channels },
    }));
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

  /** Join (and create) a channel; it is re-joined after every reconnect. */
  async join(channel) {
    const answer = await this.request("channel.join", { channel });
    this.channels.add(channel);
    this._save();
    return answer;
  }

  async leave(channel) {
    this.channels.delete(channel);
    delete this.since[channel];
    this._save();
    return this.request("channel.leave", { channel });
  }

  /** Send `{channel, content}` or `{user, content}`; resolves with `{channel, seq, ts}`. */
  send(target) {
    return this.request("message", target);
  }
}
