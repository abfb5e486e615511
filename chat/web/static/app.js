// The chat page: UI over chat-client.js. Every piece of user text goes through textContent.
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

const client = new ChatClient();
window.chatClient = client; // for the console and the tests

const state = {
  panes: new Map(), // key ("#name" or "@name") -> pane
  active: null,
  members: new Map(), // channel -> Set of usernames
  allChannels: [],
  stats: null, // the statistics interaction
  statIds: ["users", "channels", "connections", "messages", "memory"],
  period: 1,
  series: new Map(), // field -> [[t, value], ...]
  timers: [],
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

// ---- banner and status --------------------------------------------------------------------

function banner(text, kind = "info", action = null) {
  $("banner").hidden = false;
  $("banner").dataset.kind = kind;
  $("banner-text").textContent = text;
  const button = $("banner-action");
  button.hidden = !action;
  if (action) {
    button.textContent = action.label;
    button.onclick = action.run;
  }
}

function hideBanner() {
  $("banner").hidden = true;
}

$("banner-close").addEventListener("click", hideBanner);

let countdown = null;
client.addEventListener("state", (event) => {
  const { state: s, delay, attempt, error } = event.detail;
  const status = $("status");
  status.dataset.state = s;
  clearInterval(countdown);
  if (s === "online") status.textContent = "online";
  else if (s === "connecting") status.textContent = attempt ? "reconnecting…" : "connecting…";
  else if (s === "closed") status.textContent = "offline";
  else if (s === "reconnecting") {
    status.textContent = "reconnecting…";
    const until = Date.now() + delay;
    const why = error?.code === "username_taken"
      ? "The server still holds your previous session."
      : "Connection lost.";
    const show = () => {
      const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      banner(`${why} Reconnecting in ${seconds} s (attempt ${attempt})…`, "warn",
        { label: "Reconnect now", run: () => client.reconnectNow() });
    };
    show();
    countdown = setInterval(show, 1000);
  }
  setComposerEnabled();
});

client.addEventListener("failed", (event) => {
  const error = event.detail;
  banner(`Could not log back in: ${error.message}. Log in again to continue.`, "error");
  showLogin(humanError(error, client.username));
});

client.addEventListener("reconnected", (event) => {
  const { missed, gaps, epochChanged } = event.detail;
  let text;
  if (epochChanged) {
    text = "Reconnected — the server was restarted and its earlier messages are gone; anything sent while you were away could not be recovered.";
  } else {
    text = `Reconnected — ${missed} missed message${missed === 1 ? "" : "s"} recovered.`;
  }
  const lost = gaps.reduce((sum, gap) => sum + (gap.last - gap.first + 1), 0);
  if (lost) text += ` ${lost} older item${lost === 1 ? " was" : "s were"} no longer stored and could not be recovered.`;
  banner(text, epochChanged || lost ? "warn" : "ok");
  for (const pane of state.panes.values()) addNotice(pane, text);
});

// ---- login --------------------------------------------------------------------------------

function humanError(error, username) {
  switch (error.code) {
    case "username_taken":
      return `The name “${username}” is already in use. Please choose another one.`;
    case "invalid_data":
      return `That name is not allowed: ${error.message}.`;
    case "unreachable":
      return "The chat server could not be reached. Check your connection and try again.";
    default:
      return error.message || String(error);
  }
}

function showLogin(message = "") {
  $("app").hidden = true;
  $("login-view").hidden = false;
  for (const id of ["logout", "toggle-sidebar", "toggle-info"]) $(id).hidden = true;
  $("me").textContent = "";
  $("login-error").textContent = message;
  $("username").setAttribute("aria-invalid", message ? "true" : "false");
  $("username").focus();
}

function showApp() {
  $("login-view").hidden = true;
  $("app").hidden = false;
  for (const id of ["logout", "toggle-sidebar", "toggle-info"]) $(id).hidden = false;
  $("me").textContent = client.username;
}

async function login(username) {
  $("login-error").textContent = "";
  if (!NAME.test(username)) {
    showLogin("Use 1–32 characters: letters, digits, underscore, dot or hyphen.");
    return;
  }
  $("login-button").disabled = true;
  $("login-button").textContent = "Logging in…";
  try {
    await client.login(username);
    sessionStorage.setItem("chat-page.active", state.active || "");
    showApp();
    hideBanner();
    if (client.channels.size === 0) await joinChannel("general");
    else {
      for (const channel of client.channels) paneFor(`#${channel}`);
      const saved = sessionStorage.getItem("chat-page.active");
      activate(saved && state.panes.has(saved) ? saved : `#${[...client.channels][0]}`);
    }
    startTimers();
  } catch (error) {
    showLogin(humanError(error, username));
  } finally {
    $("login-button").disabled = false;
    $("login-button").textContent = "Log in";
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  login($("username").value.trim());
});

$("logout").addEventListener("click", () => {
  stopTimers();
  state.stats?.cancel();
  state.stats = null;
  client.logout();
  for (const pane of state.panes.values()) pane.list.remove();
  state.panes.clear();
  $("joined").replaceChildren();
  $("privates").replaceChildren();
  state.active = null;
  hideBanner();
  showLogin();
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
  pane = { key, name, isChannel, list, badge, button, item, unread: 0, lastDay: null };
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
  if (state.active === key) {
    state.active = null;
    const next = state.panes.keys().next().value;
    if (next) activate(next);
    else renderHeader();
  }
}

function activate(key) {
  const pane = paneFor(key);
  state.active = key;
  sessionStorage.setItem("chat-page.active", key);
  for (const other of state.panes.values()) {
    const active = other === pane;
    other.list.hidden = !active;
    other.button.setAttribute("aria-current", active ? "page" : "false");
  }
  pane.unread = 0;
  renderBadge(pane);
  renderHeader();
  renderMembers();
  closeDrawers();
  pane.list.scrollTop = pane.list.scrollHeight;
  setComposerEnabled();
}

function renderHeader() {
  const pane = state.panes.get(state.active);
  $("pane-title").textContent = pane ? (pane.isChannel ? `# ${pane.name}` : `@ ${pane.name} (private)`) : "No conversation";
  $("leave-button").hidden = !pane || !pane.isChannel;
  $("leave-button").textContent = pane && !pane.isChannel ? "Close" : "Leave";
  $("members-section").hidden = !pane || !pane.isChannel;
}

function renderBadge(pane) {
  pane.badge.hidden = pane.unread === 0;
  pane.badge.textContent = pane.unread > 99 ? "99+" : String(pane.unread);
  pane.badge.setAttribute("aria-label", `${pane.unread} unread`);
  let total = 0;
  for (const p of state.panes.values()) total += p.unread;
  $("total-unread").hidden = total === 0;
  $("total-unread").textContent = String(total);
}

function append(pane, node) {
  const list = pane.list;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(node);
  if (atBottom || pane.key === state.active) list.scrollTop = list.scrollHeight;
}

function addMessage(pane, { from, content, ts, own, pending }) {
  const node = el("li", { class: `msg${own ? " own" : ""}${pending ? " pending" : ""}` },
    el("div", { class: "meta" },
      el("span", { class: "from", text: from }),
      el("time", { datetime: new Date(ts || Date.now()).toISOString(), text: clock(ts) })),
    el("div", { class: "content", text: content }));
  append(pane, node);
  return node;
}

function addEvent(pane, text, ts) {
  append(pane, el("li", { class: "event" }, el("span", { text }), el("time", { text: clock(ts) })));
}

function addNotice(pane, text, kind = "notice") {
  append(pane, el("li", { class: kind, text }));
}

function countUnread(pane) {
  if (pane.key === state.active && !document.hidden) return;
  if (pane.key === state.active) return;
  pane.unread += 1;
  renderBadge(pane);
}

// ---- feed items ---------------------------------------------------------------------------

client.addEventListener("item", (event) => {
  const item = event.detail;
  const me = client.username;
  if (item.kind === "gap") {
    const pane = paneFor(item.channel === null ? `@${me}` : `#${item.channel}`);
    const n = item.last - item.first + 1;
    addNotice(pane, `${n} message${n === 1 ? " is" : "s are"} no longer stored (items ${item.first}–${item.last}) and could not be delivered.`, "warn");
    return;
  }
  if (item.channel === null || item.channel === undefined) {
    if (item.kind !== "message") return;
    const pane = paneFor(`@${item.from}`);
    addMessage(pane, { from: item.from, content: item.content, ts: item.ts });
    countUnread(pane);
    return;
  }
  const key = `#${item.channel}`;
  if (!state.panes.has(key) && !client.channels.has(item.channel)) return; // a channel just left
  const pane = paneFor(key);
  if (item.kind === "message") {
    addMessage(pane, { from: item.from, content: item.content, ts: item.ts, own: item.from === me });
    countUnread(pane);
  } else if (item.kind === "join" || item.kind === "leave") {
    const members = state.members.get(item.channel) || new Set();
    state.members.set(item.channel, members);
    if (item.kind === "join") members.add(item.from);
    else if (item.from !== me) members.delete(item.from);
    if (item.from === me && item.recovered) return; // our own drop and re-join: not news
    addEvent(pane, `${item.from === me ? "You" : item.from} ${item.kind === "join" ? "joined" : "left"}`, item.ts);
    if (key === state.active) renderMembers();
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
    paneFor(`#${channel}`);
    if (!existed) await loadHistory(channel, answer.seq);
    await loadMembers(channel);
    activate(`#${channel}`);
    refreshChannels();
  } catch (error) {
    $("join-error").textContent = `Could not join #${channel}: ${error.message}`;
  }
}

async function loadHistory(channel, beforeSeq) {
  const items = await client.collect("history", { channel, before: beforeSeq, limit: 50 });
  const messages = items.filter((item) => item.kind === "message");
  if (!messages.length) return;
  const pane = paneFor(`#${channel}`);
  const marker = el("li", { class: "notice", text: "Earlier messages" });
  const nodes = messages.map((item) => el("li", { class: `msg history${item.from === client.username ? " own" : ""}` },
    el("div", { class: "meta" }, el("span", { class: "from", text: item.from }), el("time", { text: clock(item.ts) })),
    el("div", { class: "content", text: item.content })));
  pane.list.prepend(marker, ...nodes);
}

async function loadMembers(channel) {
  try {
    const users = await client.collect("channel.users", { channel });
    const members = state.members.get(channel) || new Set();
    for (const user of users) members.add(user.username);
    state.members.set(channel, members);
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
  const members = [...(state.members.get(pane.name) || [])].sort();
  $("member-count").textContent = `(${members.length})`;
  for (const user of members) {
    const me = user === client.username;
    const button = el("button", { type: "button", class: "member", title: me ? "you" : `Message ${user} privately`, disabled: me,
      onclick: () => activate(`@${user}`) }, el("span", { class: "dot", "aria-hidden": "true" }), el("span", { text: me ? `${user} (you)` : user }));
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

// ---- composer -----------------------------------------------------------------------------

function setComposerEnabled() {
  const enabled = client.state === "online" && !!state.panes.get(state.active);
  $("composer-input").disabled = !enabled;
  $("send-button").disabled = !enabled;
  const pane = state.panes.get(state.active);
  $("composer-input").placeholder = !pane ? "Join a channel to talk"
    : client.state !== "online" ? "Offline — waiting to reconnect…"
    : `Message ${pane.isChannel ? "#" : "@"}${pane.name} (Enter sends, Shift+Enter: new line)`;
}

async function sendMessage() {
  const pane = state.panes.get(state.active);
  const input = $("composer-input");
  const content = input.value;
  if (!pane || !content.trim()) return;
  $("composer-error").textContent = "";
  const target = pane.isChannel ? { channel: pane.name, content } : { user: pane.name, content };
  input.value = "";
  autosize();
  try {
    const answer = await client.send(target);
    if (!pane.isChannel) addMessage(pane, { from: client.username, content, ts: answer.ts, own: true });
  } catch (error) {
    if (!input.value) input.value = content; // give the text back
    autosize();
    const why = error.code === "not_found" ? `there is no user “${pane.name}”` : error.message;
    $("composer-error").textContent = `Not sent: ${why}.`;
  }
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
  state.timers.push(setInterval(refreshChannels, 5000));
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
  for (const channel of client.channels) {
    state.members.set(channel, new Set());
    loadMembers(channel);
  }
  setComposerEnabled();
});

buildStatControls();
renderStats();
if (client.savedUsername) {
  $("username").value = client.savedUsername;
  login(client.savedUsername);
} else {
  showLogin();
}
