// The chat page: UI over chat-client.js. Every piece of user text goes through textContent.
//
// What the page keeps, and where:
//  - the session (username, session_id, epoch, channels): chat-client.js, in localStorage, so
//    every tab of this browser attaches to the same session and a reload resumes it;
//  - this tab's feed positions and unsent messages: chat-client.js, in sessionStorage;
//  - this tab's open conversation: sessionStorage "chat-page.active";
//  - private conversations read here beyond the server's one inbox read position:
//    localStorage "chat-page.v1.read" (see "Unread and read positions" below).
// Unread badges and the list of private conversations come from the server (`conversations`
// and the inbox `history`), so they are the same after a reload and on every device.
import { ChatClient } from "./chat-client.js";

const $ = (id) => document.getElementById(id);
const NAME = /^[A-Za-z0-9_.-]{1,32}$/;
const STAT_IDS = [
  ["users", "user_count", "Users"],
  ["channels", "channel_count", "Channels"],
  ["connections", "connection_count", "Connections"],
  ["messages", "message_count", "Messages"],
  ["memory", "memory_usage", "Server memory"],
];
const CHART_SECONDS = 300; // the charts show the last five minutes
const CLIENT_MEMORY_EVERY = 10000;
const REFRESH_EVERY = 5000; // channel list, unread counts (read elsewhere), members online
const HISTORY_PAGE = 50; // messages shown when a conversation is first opened
const INBOX_SCAN = 500; // newest inbox items read at login to list the private conversations
const ACTIVE_KEY = "chat-page.active"; // sessionStorage
const READ_KEY = "chat-page.v1.read"; // localStorage: {username, marks: {partner: seq}}

const client = new ChatClient();
window.chatClient = client; // for the console and the tests

const state = {
  panes: new Map(), // key ("#name" or "@name") -> pane
  active: null,
  members: new Map(), // channel -> Map(username -> online)
  allChannels: [],
  stats: null, // the statistics interaction
  statIds: ["users", "channels", "connections", "messages", "memory"],
  period: 1,
  series: new Map(), // field -> [[t, value], ...]
  timers: [],
  counted: {}, // "#channel" or "@" -> seq up to which messages are already counted as unread
  inbox: { read: 0, sent: 0 }, // the server's inbox read position; the highest one we sent
  marks: {}, // partner -> seq read in this browser (beyond inbox.read)
  readTimer: null,
  loggingIn: false,
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function clock(ts) {
  const date = ts ? new Date(ts) : new Date();
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function bytes(n) {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}

function readLocal(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || "null");
  } catch {
    return null;
  }
}

function writeLocal(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch {
    /* storage disabled: the marks then live as long as the page */
  }
}

// ---- banner and status --------------------------------------------------------------------

function banner(text, kind = "info", action = null, source = "") {
  $("banner").hidden = false;
  $("banner").dataset.kind = kind;
  $("banner").dataset.source = source;
  $("banner-text").textContent = text;
  const button = $("banner-action");
  button.hidden = !action;
  if (action) {
    button.textContent = action.label;
    button.onclick = action.run;
  }
}

function hideBanner(source = null) {
  if (source !== null && $("banner").dataset.source !== source) return;
  $("banner").hidden = true;
}

$("banner-close").addEventListener("click", () => hideBanner());

let countdown = null;
client.addEventListener("state", (event) => {
  const { state: s, delay, attempt, error } = event.detail;
  const status = $("status");
  status.dataset.state = s;
  // No pill on the login screen unless a connection is being tried.
  status.hidden = s === "closed" && !$("login-view").hidden;
  clearInterval(countdown);
  if (s === "online") {
    status.textContent = "online";
    hideBanner("connection"); // back: the catch-up speaks only if something was missed
  } else if (s === "connecting") status.textContent = attempt ? "reconnecting…" : "connecting…";
  else if (s === "closed") status.textContent = "offline";
  else if (s === "reconnecting") {
    status.textContent = "reconnecting…";
    const until = Date.now() + delay;
    const why = error?.code === "username_taken"
      ? "Your name is held by another session (another tab may be restoring yours)."
      : "Connection lost.";
    const show = () => {
      const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      banner(`${why} Reconnecting in ${seconds} s (attempt ${attempt})… Messages you send meanwhile are sent then.`, "warn",
        { label: "Reconnect now", run: () => client.reconnectNow() }, "connection");
    };
    show();
    countdown = setInterval(show, 1000);
  }
  setComposerEnabled();
});

client.addEventListener("failed", (event) => {
  const error = event.detail;
  resetPage();
  showLogin(humanError(error, client.username));
  banner(`Could not log back in: ${error.message}. Log in again to continue.`, "error");
});

client.addEventListener("reconnected", (event) => {
  const { missed, gaps, epochChanged, reconnect } = event.detail;
  const lost = gaps.reduce((sum, gap) => sum + (gap.last - gap.first + 1), 0);
  // A reload, a second tab or a reconnect that missed nothing is silent.
  if (!epochChanged && !lost && (!reconnect || missed === 0)) return;
  let text = "";
  if (epochChanged) {
    text = "Reconnected — the server was restarted and its earlier messages are gone; anything sent while you were away could not be recovered.";
  } else if (reconnect) {
    text = `Reconnected — ${missed} missed message${missed === 1 ? "" : "s"} recovered.`;
  }
  if (lost) text += ` ${lost} older item${lost === 1 ? " was" : "s were"} no longer stored and could not be recovered.`;
  text = text.trim();
  banner(text, epochChanged || lost ? "warn" : "ok", null, "reconnected");
  if (epochChanged || lost) for (const pane of state.panes.values()) addNotice(pane, text);
});

// ---- login and logout ---------------------------------------------------------------------

function humanError(error, username) {
  switch (error.code) {
    case "username_taken":
      return `The name “${username}” is already in use. Please choose another one.`;
    case "invalid_data":
      return `That name is not allowed: ${error.message}.`;
    case "unreachable":
      return "The chat server could not be reached. Check your connection and try again.";
    case "rate_limited":
      return `Too many tabs or devices are connected as “${username}”. Close one and try again.`;
    default:
      return error.message || String(error);
  }
}

function showLogin(message = "") {
  $("app").hidden = true;
  $("login-view").hidden = false;
  for (const id of ["logout", "toggle-sidebar", "toggle-info"]) $(id).hidden = true;
  $("me").textContent = "";
  $("status").hidden = true; // no "offline" before a connection was even tried
  $("login-error").textContent = message;
  $("username").setAttribute("aria-invalid", message ? "true" : "false");
  $("username").focus();
}

function showApp() {
  $("login-view").hidden = true;
  $("app").hidden = false;
  $("status").hidden = false;
  for (const id of ["logout", "toggle-sidebar", "toggle-info"]) $(id).hidden = false;
  $("me").textContent = client.username;
}

function firstChannelKey() {
  const first = $("joined").querySelector("button[data-key]");
  return first ? first.dataset.key : null;
}

async function login(username) {
  if (state.loggingIn) return;
  $("login-error").textContent = "";
  if (!NAME.test(username)) {
    showLogin("Use 1–32 characters: letters, digits, underscore, dot or hyphen.");
    return;
  }
  state.loggingIn = true;
  $("login-button").disabled = true;
  $("login-button").textContent = "Logging in…";
  try {
    const answer = await client.login(username);
    showApp();
    hideBanner();
    const saved = sessionStorage.getItem(ACTIVE_KEY);
    if (!answer.resumed && client.channels.size === 0) {
      await joinChannel("general"); // a new session with no channels to re-join
    } else if (saved && (saved.startsWith("@") || client.channels.has(saved.slice(1)))) {
      activate(saved);
    } else {
      activate(firstChannelKey());
    }
    startTimers();
  } catch (error) {
    showLogin(humanError(error, username));
  } finally {
    state.loggingIn = false;
    $("login-button").disabled = false;
    $("login-button").textContent = "Log in";
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  login($("username").value.trim());
});

$("logout").addEventListener("click", async () => {
  $("logout").disabled = true;
  try {
    await client.logout(); // the `loggedout` event resets the page
  } finally {
    $("logout").disabled = false;
  }
});

function resetPage() {
  stopTimers();
  state.stats?.cancel();
  state.stats = null;
  clearTimeout(state.readTimer);
  for (const pane of state.panes.values()) pane.list.remove();
  state.panes.clear();
  state.members.clear();
  state.counted = {};
  state.inbox = { read: 0, sent: 0 };
  state.marks = {};
  $("joined").replaceChildren();
  $("privates").replaceChildren();
  $("members").replaceChildren();
  state.active = null;
  renderHeader();
  renderBadges();
}

client.addEventListener("loggedout", (event) => {
  resetPage();
  sessionStorage.removeItem(ACTIVE_KEY);
  writeLocal(READ_KEY, null);
  hideBanner();
  showLogin();
  if (event.detail.elsewhere) banner("You were logged out in another tab.", "info");
});

// Another tab of this browser logged in: this one joins it (the session is the browser's).
client.addEventListener("sessionavailable", (event) => {
  if ($("login-view").hidden || state.loggingIn) return;
  $("username").value = event.detail.username;
  login(event.detail.username);
});

// ---- panes --------------------------------------------------------------------------------

function paneFor(key) {
  let pane = state.panes.get(key);
  if (pane) return pane;
  const isChannel = key.startsWith("#");
  const name = key.slice(1);
  const list = el("ol", { class: "messages", "aria-live": "polite", "aria-label": `Messages in ${key}`, hidden: true });
  const badge = el("span", { class: "badge", hidden: true });
  const button = el("button", { type: "button", class: "nav-item", "data-key": key, onclick: () => activate(key) },
    el("span", { class: "nav-name", text: isChannel ? `# ${name}` : `@ ${name}` }), badge);
  const item = el("li", {}, button);
  pane = {
    key, name, isChannel, list, badge, button, item,
    seqs: new Set(), // seqs shown (of the channel's log, or of the own inbox)
    byClientId: new Map(), // own messages by client_id: a message is shown once
    last: 0, // highest seq of this conversation known
    loaded: null, // the history load, once started
    base: 0, // unread messages up to state.counted (from `conversations`)
    unreadSeqs: [], // seqs of unread messages counted since (private: all of them)
    readSeq: 0, // the read position the server has for this channel
  };
  state.panes.set(key, pane);
  $(isChannel ? "joined" : "privates").append(item);
  $("panes").append(list);
  return pane;
}

function removePane(key) {
  const pane = state.panes.get(key);
  if (!pane) return;
  pane.list.remove();
  pane.item.remove();
  state.panes.delete(key);
  renderBadges();
  if (state.active === key) {
    state.active = null;
    activate(firstChannelKey() ?? state.panes.keys().next().value ?? null);
  }
}

function activate(key) {
  const previous = state.panes.get(state.active);
  if (previous && previous.key !== key) markRead(previous); // what arrived just before leaving it
  const pane = key ? paneFor(key) : null;
  state.active = key;
  if (key) sessionStorage.setItem(ACTIVE_KEY, key);
  for (const other of state.panes.values()) {
    const active = other === pane;
    other.list.hidden = !active;
    other.button.setAttribute("aria-current", active ? "page" : "false");
  }
  renderHeader();
  renderMembers();
  closeDrawers();
  setComposerEnabled();
  if (!pane) return;
  pane.list.scrollTop = pane.list.scrollHeight;
  loadHistory(pane);
  if (pane.isChannel) loadMembers(pane.name);
  markRead(pane);
}

function renderHeader() {
  const pane = state.panes.get(state.active);
  $("pane-title").textContent = pane ? (pane.isChannel ? `# ${pane.name}` : `@ ${pane.name} (private)`) : "No conversation";
  $("leave-button").hidden = !pane || !pane.isChannel;
  $("leave-button").textContent = pane && !pane.isChannel ? "Close" : "Leave";
  $("members-section").hidden = !pane || !pane.isChannel;
}

function unreadOf(pane) {
  return pane.base + pane.unreadSeqs.length;
}

function renderBadge(pane) {
  const unread = unreadOf(pane);
  pane.badge.hidden = unread === 0;
  pane.badge.textContent = unread > 99 ? "99+" : String(unread);
  pane.badge.setAttribute("aria-label", `${unread} unread`);
  let total = 0;
  for (const p of state.panes.values()) total += unreadOf(p);
  $("total-unread").hidden = total === 0;
  $("total-unread").textContent = String(total);
}

function renderBadges() {
  for (const pane of state.panes.values()) renderBadge(pane);
  if (!state.panes.size) $("total-unread").hidden = true;
}

function append(pane, node) {
  const list = pane.list;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(node);
  if (atBottom || pane.key === state.active) list.scrollTop = list.scrollHeight;
}

/** Put `node` among the shown items in seq order (history arrives after newer items). */
function insertBySeq(pane, node, seq) {
  let before = null;
  for (const child of pane.list.children) {
    if (child === node) continue;
    if (child.dataset.seq ? Number(child.dataset.seq) > seq : child.classList.contains("pending")) {
      before = child;
      break;
    }
  }
  pane.list.insertBefore(node, before);
}

function messageNode({ from, content, ts, own, pending, history }) {
  const meta = el("div", { class: "meta" },
    el("span", { class: "from", text: from }),
    el("time", { datetime: new Date(ts || Date.now()).toISOString(), text: clock(ts) }));
  if (pending) meta.append(el("span", { class: "sending", text: "sending…" }));
  return el("li", { class: `msg${own ? " own" : ""}${pending ? " pending" : ""}${history ? " history" : ""}` },
    meta, el("div", { class: "content", text: content }));
}

/** A stored message (from the feed, or from `history` when `fromHistory`), shown once. */
function placeMessage(pane, item, fromHistory = false) {
  if (pane.seqs.has(item.seq)) return;
  pane.seqs.add(item.seq);
  pane.last = Math.max(pane.last, item.seq);
  const own = item.from === client.username;
  const known = own && item.client_id ? pane.byClientId.get(item.client_id) : null;
  if (known) {
    confirmNode(known, item.seq, item.ts); // our own message: it was shown when sent
    if (fromHistory) insertBySeq(pane, known, item.seq);
    return;
  }
  const node = messageNode({ from: item.from, content: item.content, ts: item.ts, own, history: fromHistory });
  node.dataset.seq = item.seq;
  if (own && item.client_id) {
    node.dataset.clientId = item.client_id;
    pane.byClientId.set(item.client_id, node);
  }
  if (fromHistory) insertBySeq(pane, node, item.seq);
  else append(pane, node);
}

function confirmNode(node, seq, ts) {
  node.classList.remove("pending", "failed");
  node.querySelector(".sending")?.remove();
  node.dataset.seq = seq;
  const time = node.querySelector("time");
  if (time && ts) {
    time.dateTime = new Date(ts).toISOString();
    time.textContent = clock(ts);
  }
}

function addEvent(pane, text, ts, seq) {
  const node = el("li", { class: "event" }, el("span", { text }), el("time", { text: clock(ts) }));
  if (seq) node.dataset.seq = seq;
  append(pane, node);
}

function addNotice(pane, text, kind = "notice") {
  append(pane, el("li", { class: kind, text }));
}

async function loadHistory(pane, before = null) {
  if (pane.loaded) return pane.loaded;
  const key = pane.isChannel ? pane.name : "@";
  if (before === null) {
    const shown = [...pane.seqs];
    if (shown.length) before = Math.min(...shown);
    else if (client.since[key] !== undefined) before = client.since[key] + 1;
    else return null; // not a member yet: the feed will tell
  }
  pane.loaded = (async () => {
    if (before <= 1) return;
    const query = pane.isChannel ? { channel: pane.name } : { user: pane.name };
    let items;
    try {
      items = await client.history({ ...query, before, limit: HISTORY_PAGE });
    } catch {
      pane.loaded = null; // offline: tried again when the pane is opened next
      return;
    }
    const messages = items.filter((item) => item.kind === "message");
    for (const item of messages) placeMessage(pane, item, true);
    if (messages.length) pane.list.prepend(el("li", { class: "notice", text: "Earlier messages" }));
    if (pane.key === state.active) pane.list.scrollTop = pane.list.scrollHeight;
  })();
  return pane.loaded;
}

// ---- unread and read positions ------------------------------------------------------------
//
// A channel's badge is the server's `unread` (from `conversations`, up to its `last_seq`) plus
// the messages by others the feed delivered since. The server keeps one read position for the
// whole inbox, so the page moves it only as far as no private conversation still has unread
// messages before it; a conversation read here beyond that is remembered in localStorage, for
// every tab of this browser. Reading (the pane open and the tab visible) sends `read`.

function viewing(pane) {
  return pane.key === state.active && document.visibilityState === "visible" && !$("app").hidden;
}

function markOf(partner) {
  return Math.max(state.inbox.read, state.marks[partner] ?? 0);
}

function loadMarks() {
  const saved = readLocal(READ_KEY);
  state.marks = saved && saved.username === client.username && saved.marks ? saved.marks : {};
}

function saveMarks() {
  writeLocal(READ_KEY, { username: client.username, marks: state.marks });
}

function countItem(pane, key, item) {
  if (item.kind !== "message" || item.from === client.username) return;
  if (item.seq <= (state.counted[key] ?? 0)) return; // counted by `conversations` already
  state.counted[key] = item.seq;
  if (!pane.isChannel && item.seq <= markOf(pane.name)) return;
  if (viewing(pane)) return;
  pane.unreadSeqs.push(item.seq);
  renderBadge(pane);
}

function scheduleRead() {
  clearTimeout(state.readTimer);
  state.readTimer = setTimeout(() => {
    const pane = state.panes.get(state.active);
    if (pane) markRead(pane);
  }, 150);
}

function markRead(pane) {
  if (!viewing(pane)) return;
  if (unreadOf(pane)) {
    pane.base = 0;
    pane.unreadSeqs = [];
    renderBadge(pane);
  }
  if (client.state !== "online") return; // sent when back: every login reads `conversations`
  if (pane.isChannel) {
    const seq = client.since[pane.name] ?? 0;
    if (seq > pane.readSeq) {
      pane.readSeq = seq;
      client.read(pane.name, seq).catch(() => {});
    }
    return;
  }
  if (pane.last > markOf(pane.name)) {
    state.marks[pane.name] = pane.last;
    saveMarks();
  }
  sendInboxRead();
}

function sendInboxRead() {
  let seq = client.since["@"] ?? 0;
  for (const pane of state.panes.values()) {
    if (!pane.isChannel && pane.unreadSeqs.length) seq = Math.min(seq, pane.unreadSeqs[0] - 1);
  }
  if (seq <= state.inbox.sent) return;
  state.inbox.sent = seq;
  client.read(null, seq).then((answer) => {
    state.inbox.read = Math.max(state.inbox.read, answer.seq);
    let changed = false;
    for (const [partner, mark] of Object.entries(state.marks)) {
      if (mark <= state.inbox.read) {
        delete state.marks[partner];
        changed = true;
      }
    }
    if (changed) saveMarks();
  }, () => {
    state.inbox.sent = state.inbox.read;
  });
}

/** The `conversations` rows: read positions and unread counts, as the server has them. */
function applyConversations(rows, login = false) {
  for (const row of rows) {
    if (row.channel !== null) {
      if (!client.channels.has(row.channel)) continue; // left meanwhile
      const key = `#${row.channel}`;
      const pane = paneFor(key);
      pane.readSeq = Math.max(pane.readSeq, row.read_seq);
      pane.base = row.unread;
      pane.unreadSeqs = pane.unreadSeqs.filter((seq) => seq > row.last_seq);
      state.counted[key] = Math.max(state.counted[key] ?? 0, row.last_seq);
      if (viewing(pane)) markRead(pane);
      renderBadge(pane);
    } else {
      state.inbox.read = Math.max(state.inbox.read, row.read_seq);
      state.inbox.sent = Math.max(state.inbox.sent, row.read_seq);
      // At a login loadInbox counts the private messages up to last_seq from history; later
      // the feed counts every one (the inbox row has no per-conversation counts).
      if (login) state.counted["@"] = Math.max(state.counted["@"] ?? 0, row.last_seq);
      for (const pane of state.panes.values()) {
        if (pane.isChannel) continue;
        pane.unreadSeqs = pane.unreadSeqs.filter((seq) => seq > markOf(pane.name));
        renderBadge(pane);
      }
    }
  }
}

/** The private conversations and their unread messages, from the newest inbox items. */
async function loadInbox(row) {
  const me = client.username;
  let items = [];
  try {
    if (row.last_seq > 0) items = await client.history({ before: row.last_seq + 1, limit: INBOX_SCAN });
    if (row.unread && items.length === INBOX_SCAN && items[0].seq > row.read_seq + 1) {
      const older = await client.history({ after: row.read_seq, limit: 1000 });
      items = [...older.filter((item) => item.seq < items[0].seq), ...items];
    }
  } catch {
    return; // offline: the next login reads it again
  }
  if (client.username !== me) return; // logged out meanwhile
  const partners = new Map(); // partner -> {last, unread: [seq...]}
  for (const item of items) {
    if (item.kind !== "message") continue;
    const partner = item.from === me ? item.to : item.from;
    const info = partners.get(partner) || { last: 0, unread: [] };
    info.last = Math.max(info.last, item.seq);
    if (item.from !== me && item.seq > row.read_seq) info.unread.push(item.seq);
    partners.set(partner, info);
  }
  const recent = [...partners].sort((a, b) => b[1].last - a[1].last); // newest first
  for (const [partner, info] of recent) {
    const pane = paneFor(`@${partner}`);
    pane.last = Math.max(pane.last, info.last);
    const mark = markOf(partner);
    const unread = info.unread.filter((seq) => seq > mark);
    const later = pane.unreadSeqs.filter((seq) => seq > row.last_seq); // counted from the feed
    pane.unreadSeqs = [...new Set([...unread, ...later])].sort((a, b) => a - b);
    if (viewing(pane)) markRead(pane);
    renderBadge(pane);
  }
}

async function refreshConversations() {
  if (client.state !== "online") return;
  try {
    applyConversations(await client.collect("conversations"));
  } catch {
    /* offline: the next login reads them */
  }
}

// Every login (the first, and each after a reconnect) reads `conversations` before the feed opens.
client.addEventListener("conversations", (event) => {
  const { rows } = event.detail;
  loadMarks();
  // Channels the session left while this tab was away (another tab, another device).
  for (const pane of [...state.panes.values()]) {
    if (pane.isChannel && !client.channels.has(pane.name)) removePane(pane.key);
  }
  for (const channel of client.channels) paneFor(`#${channel}`); // also those to join again
  applyConversations(rows, true);
  for (const data of client.pending()) showPending(data); // restored after a reload
  const inbox = rows.find((row) => row.channel === null);
  if (inbox) loadInbox(inbox);
});

document.addEventListener("visibilitychange", () => {
  const pane = state.panes.get(state.active);
  if (pane) markRead(pane);
});

window.addEventListener("storage", (event) => {
  if (event.key !== READ_KEY || !client.username) return;
  loadMarks(); // another tab read a private conversation
  for (const pane of state.panes.values()) {
    if (pane.isChannel) continue;
    pane.unreadSeqs = pane.unreadSeqs.filter((seq) => seq > markOf(pane.name));
    renderBadge(pane);
  }
});

// ---- feed items ---------------------------------------------------------------------------

client.addEventListener("item", (event) => {
  const item = event.detail;
  const me = client.username;
  if (item.kind === "gap") {
    const pane = item.channel === null ? state.panes.get(state.active) ?? paneFor(`@${me}`) : paneFor(`#${item.channel}`);
    const n = item.last - item.first + 1;
    addNotice(pane, `${n} message${n === 1 ? " is" : "s are"} no longer stored (items ${item.first}–${item.last}) and could not be delivered.`, "warn");
    return;
  }
  if (item.channel === null || item.channel === undefined) {
    if (item.kind !== "message") return;
    // the other side's message, or our own copy (sent from this tab, another tab or device)
    const pane = paneFor(`@${item.from === me ? item.to : item.from}`);
    placeMessage(pane, item);
    countItem(pane, "@", item);
    if (viewing(pane)) scheduleRead();
    return;
  }
  const key = `#${item.channel}`;
  if (item.kind === "leave" && item.from === me && !item.recovered) {
    // we left, in this tab or another one (the session's memberships are shared)
    state.members.delete(item.channel);
    removePane(key);
    refreshChannels();
    return;
  }
  if (!state.panes.has(key) && !client.channels.has(item.channel)) return; // a channel just left
  const pane = paneFor(key);
  if (item.kind === "message") {
    placeMessage(pane, item);
    countItem(pane, key, item);
    if (viewing(pane)) scheduleRead();
  } else if (item.kind === "join" || item.kind === "leave") {
    const members = state.members.get(item.channel) || new Map();
    state.members.set(item.channel, members);
    if (item.kind === "join") members.set(item.from, true);
    else if (item.from !== me) members.delete(item.from);
    if (key === state.active) renderMembers();
    if (item.from === me && item.recovered) return; // our own session ending and rejoining
    pane.seqs.add(item.seq);
    addEvent(pane, `${item.from === me ? "You" : item.from} ${item.kind === "join" ? "joined" : "left"}`, item.ts, item.seq);
    if (item.from === me && item.kind === "join") refreshChannels(); // joined in another tab
  }
});

// ---- channels, members --------------------------------------------------------------------

async function joinChannel(channel) {
  $("join-error").textContent = "";
  if (!NAME.test(channel)) {
    $("join-error").textContent = "Channel names are 1–32 letters, digits, _ . or -.";
    return;
  }
  const existed = client.channels.has(channel);
  try {
    const answer = await client.join(channel);
    const pane = paneFor(`#${channel}`);
    if (!existed) await loadHistory(pane, answer.seq);
    activate(`#${channel}`);
    refreshChannels();
  } catch (error) {
    $("join-error").textContent = `Could not join #${channel}: ${error.message}`;
  }
}

async function loadMembers(channel) {
  try {
    const users = await client.collect("channel.users", { channel });
    state.members.set(channel, new Map(users.map((user) => [user.username, user.online !== false])));
    if (state.active === `#${channel}`) renderMembers();
  } catch {
    /* offline: refreshed on the next session */
  }
}

function renderMembers() {
  const pane = state.panes.get(state.active);
  const list = $("members");
  list.replaceChildren();
  if (!pane || !pane.isChannel) return;
  const members = state.members.get(pane.name) || new Map();
  const names = [...members.keys()].sort();
  $("member-count").textContent = `(${names.length})`;
  for (const user of names) {
    const me = user === client.username;
    const online = me || members.get(user);
    const button = el("button", { type: "button", class: `member${online ? "" : " away"}`,
      title: me ? "you" : `Message ${user} privately${online ? "" : " (away: sees it when back)"}`, disabled: me,
      onclick: () => activate(`@${user}`) },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("span", { text: me ? `${user} (you)` : user }),
    online ? null : el("span", { class: "sr-only", text: " (away)" }));
    list.append(el("li", {}, button));
  }
}

async function refreshChannels() {
  if (client.state !== "online") return;
  try {
    state.allChannels = await client.collect("channels");
  } catch {
    return;
  }
  const list = $("all-channels");
  list.replaceChildren();
  for (const { channel, users } of state.allChannels) {
    const joined = client.channels.has(channel);
    const button = el("button", { type: "button", class: "nav-item", title: joined ? `Open #${channel}` : `Join #${channel}`,
      onclick: () => (joined ? activate(`#${channel}`) : joinChannel(channel)) },
      el("span", { class: "nav-name", text: `# ${channel}` }),
      el("span", { class: "count", text: `${users} user${users === 1 ? "" : "s"}` }),
      joined ? null : el("span", { class: "join-hint", text: "join" }));
    list.append(el("li", {}, button));
  }
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("join-name").value.trim().replace(/^#/, "");
  $("join-name").value = "";
  joinChannel(name);
});

$("dm-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("dm-name").value.trim().replace(/^@/, "");
  if (!NAME.test(name)) return;
  $("dm-name").value = "";
  activate(`@${name}`);
  $("composer-input").focus();
});

$("leave-button").addEventListener("click", async () => {
  const pane = state.panes.get(state.active);
  if (!pane) return;
  if (pane.isChannel) {
    try {
      await client.leave(pane.name);
    } catch (error) {
      $("composer-error").textContent = `Could not leave: ${error.message}`;
      return;
    }
    state.members.delete(pane.name);
    refreshChannels();
  }
  removePane(pane.key);
});

// ---- composer: optimistic, exactly once ---------------------------------------------------
//
// A message is shown at once, marked "sending…", with a client_id. chat-client.js sends it
// again after a reconnect until the server answers (the server stores it once); the feed then
// delivers our own copy, matched by client_id, so it is never shown twice.

function setComposerEnabled() {
  const pane = state.panes.get(state.active);
  const enabled = !!client.username && client.state !== "closed" && !!pane;
  $("composer-input").disabled = !enabled;
  $("send-button").disabled = !enabled;
  $("composer-input").placeholder = !pane ? "Join a channel to talk"
    : client.state !== "online" ? "Offline — what you send now is sent when the connection is back"
    : `Message ${pane.isChannel ? "#" : "@"}${pane.name} (Enter sends, Shift+Enter: new line)`;
}

function paneOfMessage(data) {
  return data.channel ? `#${data.channel}` : `@${data.user}`;
}

function showPending(data) {
  const pane = paneFor(paneOfMessage(data));
  if (pane.byClientId.has(data.client_id)) return;
  const node = messageNode({ from: client.username, content: data.content, own: true, pending: true });
  node.dataset.clientId = data.client_id;
  pane.byClientId.set(data.client_id, node);
  append(pane, node);
}

client.addEventListener("sending", (event) => showPending(event.detail.data));

client.addEventListener("sent", (event) => {
  const { data, answer } = event.detail;
  const pane = state.panes.get(paneOfMessage(data));
  const node = pane?.byClientId.get(data.client_id);
  if (!node) return;
  confirmNode(node, answer.seq, answer.ts);
  pane.seqs.add(answer.seq); // the feed's copy of it is this node
  pane.last = Math.max(pane.last, answer.seq);
});

client.addEventListener("unsent", (event) => {
  const { data, error } = event.detail;
  if (error.code === "closed") return; // logged out: the page is reset
  const pane = state.panes.get(paneOfMessage(data));
  const node = pane?.byClientId.get(data.client_id);
  const why = error.code === "not_found" ? `there is no user “${pane?.name ?? data.user}”` : error.message;
  if (pane && pane.key === state.active) {
    node?.remove();
    pane.byClientId.delete(data.client_id);
    const input = $("composer-input");
    if (!input.value) input.value = data.content; // give the text back
    autosize();
    $("composer-error").textContent = `Not sent: ${why}.`;
  } else if (node) {
    node.classList.remove("pending");
    node.classList.add("failed");
    const label = node.querySelector(".sending") || node.querySelector(".meta").appendChild(el("span", { class: "sending" }));
    label.textContent = `not sent: ${why}`;
  }
});

function sendMessage() {
  const pane = state.panes.get(state.active);
  const input = $("composer-input");
  const content = input.value;
  if (!pane || !content.trim()) return;
  $("composer-error").textContent = "";
  const target = pane.isChannel ? { channel: pane.name, content } : { user: pane.name, content };
  target.client_id = client.newClientId();
  input.value = "";
  autosize();
  client.send(target).catch(() => {}); // `sending`, `sent` and `unsent` update the page
}

function autosize() {
  const input = $("composer-input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});
$("composer-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendMessage();
  }
});
$("composer-input").addEventListener("input", () => {
  autosize();
  $("composer-error").textContent = "";
});

// ---- narrow screens: drawers ---------------------------------------------------------------

function toggleDrawer(id, buttonId) {
  const open = !document.body.classList.contains(`${id}-open`);
  closeDrawers();
  document.body.classList.toggle(`${id}-open`, open);
  $(buttonId).setAttribute("aria-expanded", String(open));
  if (open) $(id).querySelector("button, input, select")?.focus();
}

function closeDrawers() {
  document.body.classList.remove("sidebar-open", "info-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
  $("toggle-info").setAttribute("aria-expanded", "false");
}

$("toggle-sidebar").addEventListener("click", () => toggleDrawer("sidebar", "toggle-sidebar"));
$("toggle-info").addEventListener("click", () => toggleDrawer("info", "toggle-info"));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeDrawers();
});

// ---- statistics ---------------------------------------------------------------------------

function buildStatControls() {
  const fieldset = document.querySelector(".stats-ids");
  for (const [id, , label] of STAT_IDS) {
    const box = el("input", { type: "checkbox", id: `stat-${id}`, value: id, checked: state.statIds.includes(id) });
    box.addEventListener("change", () => {
      const ids = STAT_IDS.map(([i]) => i).filter((i) => $(`stat-${i}`).checked);
      if (!ids.length) {
        box.checked = true; // the server needs at least one id
        return;
      }
      state.statIds = ids;
      state.stats?.send({ ids });
      renderStats();
    });
    fieldset.append(el("label", { class: "check" }, box, el("span", { text: label })));
  }
  $("stats-period").addEventListener("change", () => {
    state.period = Number($("stats-period").value);
    state.stats?.send({ period_seconds: state.period });
  });
}

function openStatistics() {
  state.stats?.cancel();
  state.stats = client.channel("statistics", { ids: state.statIds, period_seconds: state.period }, {
    credit: 8,
    onNext: (data) => {
      const now = Date.now();
      for (const [field, value] of Object.entries(data)) {
        const series = state.series.get(field) || [];
        series.push([now, value]);
        while (series.length && series[0][0] < now - CHART_SECONDS * 1000) series.shift();
        state.series.set(field, series);
      }
      renderStats();
    },
  });
  state.stats.done.catch((error) => {
    if (error.code !== "disconnected" && error.code !== "closed") {
      $("client-memory").textContent = `Statistics stopped: ${error.message}`;
    }
  });
}

function sparkline(points, width = 220, height = 40) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "spark");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("preserveAspectRatio", "none");
  if (points.length < 1) return svg;
  // The x axis spans the data seen so far: at least 20 seconds, at most CHART_SECONDS.
  const now = Date.now();
  const span = Math.min(CHART_SECONDS * 1000, Math.max(20000, now - points[0][0]));
  const t0 = now - span;
  const values = points.map(([, v]) => v);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi === lo) {
    hi += 1;
    lo = Math.max(0, lo - 1);
  }
  const x = (t) => ((t - t0) / (now - t0)) * width;
  const y = (v) => height - 3 - ((v - lo) / (hi - lo)) * (height - 6);
  const coords = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
  if (points.length === 1) coords.unshift(`${(x(points[0][0]) - 2).toFixed(1)},${y(values[0]).toFixed(1)}`);
  const area = document.createElementNS(NS, "polygon");
  area.setAttribute("points", `${coords[0].split(",")[0]},${height} ${coords.join(" ")} ${coords.at(-1).split(",")[0]},${height}`);
  area.setAttribute("class", "area");
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", coords.join(" "));
  line.setAttribute("class", "line");
  svg.append(area, line);
  return svg;
}

function renderStats() {
  const cards = $("stat-cards");
  cards.replaceChildren();
  for (const [id, field, label] of STAT_IDS) {
    if (!state.statIds.includes(id)) continue;
    const series = state.series.get(field) || [];
    const last = series.at(-1)?.[1];
    const text = last === undefined ? "…" : field === "memory_usage" ? bytes(last) : last.toLocaleString();
    cards.append(el("div", { class: "stat", "data-stat": id },
      el("div", { class: "stat-head" }, el("span", { class: "stat-label", text: label }), el("span", { class: "stat-value", text })),
      sparkline(series)));
  }
  const first = [...state.series.values()].find((s) => s.length)?.[0]?.[0];
  const seconds = first ? Math.min(CHART_SECONDS, Math.max(20, (Date.now() - first) / 1000)) : 20;
  const span = seconds < 90 ? `${Math.round(seconds)} seconds` : `${Math.round(seconds / 60)} minutes`;
  cards.append(el("p", { class: "help", text: `Charts: the last ${span} (at most ${CHART_SECONDS / 60} minutes).` }));
}

function reportClientMemory() {
  const memory = performance.memory;
  if (!memory) {
    $("client-memory").textContent = "This browser does not expose its memory use.";
    return;
  }
  const used = Math.round(memory.usedJSHeapSize);
  if (client.fire("statistics", { memory_usage: used })) {
    $("client-memory").textContent = `This page’s JS heap: ${bytes(used)} (reported to the server every ${CLIENT_MEMORY_EVERY / 1000} s).`;
  }
}

function startTimers() {
  stopTimers();
  state.timers.push(setInterval(() => {
    refreshChannels();
    refreshConversations(); // read elsewhere (another tab, another device)
    const pane = state.panes.get(state.active);
    if (pane?.isChannel) loadMembers(pane.name); // who is online
  }, REFRESH_EVERY));
  state.timers.push(setInterval(reportClientMemory, CLIENT_MEMORY_EVERY));
  state.timers.push(setInterval(renderStats, 5000)); // keeps the charts sliding
  reportClientMemory();
}

function stopTimers() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

// Every login (the first and each one after a reconnect) reopens the per-connection streams.
client.addEventListener("session", () => {
  openStatistics();
  refreshChannels();
  for (const channel of client.channels) loadMembers(channel);
  setComposerEnabled();
  scheduleRead(); // what was read while the connection was down
});

buildStatControls();
renderStats();
if (client.savedUsername) {
  $("username").value = client.savedUsername;
  login(client.savedUsername); // resumes the session of this browser (another tab, a reload)
} else {
  showLogin();
}
