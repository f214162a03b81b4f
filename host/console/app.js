// Crogia web console: plain ES module, no build step, served by the server.
// Talks to the same REST and WebSocket API as any client; sends the API token
// (kept in localStorage) when the server asks for one.

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
};

let token = localStorage.getItem("crogia.token") || "";
let current = null; // selected session id
let socket = null;
let lastSeq = 0;
let reconnectDelay = 500;

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401) {
    if (!(await askToken())) throw new Error("This server needs an API token (Token, top right).");
    return api(method, path, body);
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.detail || `HTTP ${resp.status}`);
  return data;
}

// One prompt at a time, however many requests were refused; resolves to
// whether the user gave a token.
let tokenPrompt = null;
function askToken() {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const dialog = $("#token-dialog");
    $("#token-input").value = token;
    dialog.onclose = () => {
      const ok = dialog.returnValue === "ok" && $("#token-input").value.trim() !== "";
      if (ok) {
        token = $("#token-input").value.trim();
        localStorage.setItem("crogia.token", token);
        if (current) connect();
      }
      tokenPrompt = null;
      resolve(ok);
    };
    dialog.returnValue = "";
    dialog.showModal();
  });
  return tokenPrompt;
}

function toast(message) {
  const note = el("div", { className: "event error", textContent: message });
  (current ? $("#events") : $("#view")).append(note);
  setTimeout(() => note.remove(), 6000);
}

// ---- health and sessions -------------------------------------------------

async function refreshHealth() {
  try {
    const h = await fetch("/api/health", { headers: token ? { Authorization: `Bearer ${token}` } : {} }).then((r) => r.json());
    const pill = $("#health");
    // With several engines, the ones that do not answer, by name.
    const down = (h.engines || []).filter((e) => !e.available).map((e) => e.name);
    const some = h.engines && h.engines.length > 1 && down.length ? ` · down: ${down.join(", ")}` : "";
    pill.textContent = h.docker_available ? `Docker ok · ${h.active_sessions} active${some}` : "Docker unavailable";
    pill.className = `pill ${h.docker_available ? "ok" : "bad"}`;
  } catch {
    $("#health").textContent = "server unreachable";
  }
}

async function refreshSessions() {
  refreshHealth();
  const list = await api("GET", "/api/sessions");
  const ul = $("#sessions");
  ul.replaceChildren();
  for (const s of list.slice().reverse()) {
    const li = el("li", { className: s.session_id === current ? "selected" : "" },
      el("div", {}, el("span", { className: "id", textContent: s.session_id }), " ",
        el("span", { className: `pill ${s.status}`, textContent: s.status })),
      el("div", { className: "task", textContent: s.last_task || "no task yet" }),
      el("div", { className: "owner", textContent: spending(s) }));
    li.dataset.session = s.session_id;
    li.onclick = () => openSession(s.session_id);
    ul.append(li);
    if (s.session_id === current) showStatus(s);
  }
}

// Whose session it is and what its tasks used (of its budget, if any).
function spending(s) {
  const used = `${s.tokens_used || 0}${s.budget_tokens ? ` of ${s.budget_tokens}` : ""} tokens`;
  return s.owner ? `${s.owner} · ${used}` : used;
}

function showStatus(s) {
  const pill = $("#session-status");
  const engine = s.engine && s.engine !== "default" ? ` · on ${s.engine}` : "";
  pill.textContent = `${s.status} · ${s.container_status}${engine} · ${spending(s)}`;
  pill.className = `pill ${s.status}`;
}

$("#new-session").onsubmit = async (e) => {
  e.preventDefault();
  const task = $("#new-task").value.trim();
  try {
    const s = await api("POST", "/api/sessions", task ? { task } : {});
    $("#new-task").value = "";
    await refreshSessions();
    openSession(s.session_id);
  } catch (err) {
    toast(err.message);
  }
};

$("#delete-session").onclick = async () => {
  if (!current || !confirm(`Delete session ${current}, its container and its files?`)) return;
  try {
    await api("DELETE", `/api/sessions/${current}`);
    closeSocket();
    current = null;
    $("#session").hidden = true;
    $("#empty").hidden = false;
    refreshSessions();
  } catch (err) {
    toast(err.message);
  }
};

// ---- one session ----------------------------------------------------------

async function openSession(id) {
  current = id;
  $("#tools").hidden = true;
  $("#usage").hidden = true;
  $("#empty").hidden = true;
  $("#session").hidden = false;
  $("#session-title").textContent = id;
  document.querySelectorAll("#sessions li").forEach((li) => li.classList.toggle("selected", li.dataset.session === id));
  $("#events").replaceChildren();
  messageBlock = null;
  toolBlocks.clear();
  approvalBlocks.clear();
  lastSeq = 0;
  picked = null;
  closeTerminal();
  connect();
  selectTab("activity");
  refreshSessions();
}

document.querySelectorAll(".tabs button").forEach((b) => (b.onclick = () => selectTab(b.dataset.tab)));

function selectTab(name) {
  document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  for (const t of ["activity", "files", "processes", "shell", "terminal", "changes"]) $(`#tab-${t}`).hidden = t !== name;
  if (name === "files") loadTree();
  if (name === "changes") loadCheckpoints();
  if (name === "processes") loadProcesses();
  if (name === "terminal") openTerminal().catch((e) => toast(e.message));
}

// ---- terminal (xterm.js, loaded on first use) ------------------------------

let term = null;
let fitAddon = null;
let termSocket = null;
let termSession = null;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = el("script", { src });
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.append(s);
  });
}

async function loadXterm() {
  if (window.Terminal) return;
  document.head.append(el("link", { rel: "stylesheet", href: "/console/vendor/xterm.css" }));
  await loadScript("/console/vendor/xterm.js");
  await loadScript("/console/vendor/xterm-addon-fit.js");
}

function closeTerminal() {
  if (termSocket) {
    termSocket.onclose = null;
    termSocket.close();
    termSocket = null;
  }
  termSession = null;
}

function termSend(data) {
  if (termSocket && termSocket.readyState === WebSocket.OPEN) termSocket.send(data);
}

// Opens a terminal on the current session, or shows the one already open.
async function openTerminal(fresh = false) {
  await loadXterm();
  if (!term) {
    // The DOM renderer: the screen is text a browser (and a screen reader) can read.
    term = new window.Terminal({ cursorBlink: true, fontSize: 13, scrollback: 5000, rendererType: "dom" });
    fitAddon = new window.FitAddon.FitAddon();
    term.loadAddon(fitAddon);
    term.open($("#terminal"));
    const encoder = new TextEncoder();
    term.onData((d) => termSend(encoder.encode(d)));
    term.onResize(({ cols, rows }) => termSend(JSON.stringify({ type: "resize", cols, rows })));
    window.addEventListener("resize", () => { if (!$("#tab-terminal").hidden) fitAddon.fit(); });
  }
  fitAddon.fit();
  term.focus();
  if (!fresh && termSocket && termSession === current) return;
  closeTerminal();
  term.reset();
  termSession = current;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams({ cols: String(term.cols), rows: String(term.rows) });
  if (token) params.set("token", token);
  const sock = new WebSocket(`${proto}://${location.host}/ws/${current}/pty?${params}`);
  sock.binaryType = "arraybuffer";
  termSocket = sock;
  $("#term-state").textContent = "connecting…";
  sock.onopen = () => { $("#term-state").textContent = "connected"; };
  sock.onmessage = (m) => {
    const bytes = new Uint8Array(m.data);
    if (term.writeUtf8) term.writeUtf8(bytes); else term.write(bytes);
  };
  sock.onclose = (e) => {
    if (termSocket === sock) termSocket = null;
    $("#term-state").textContent = `closed${e.code ? ` (${e.code}${e.reason ? `: ${e.reason}` : ""})` : ""}`;
  };
}

$("#term-new").onclick = () => openTerminal(true).catch((e) => toast(e.message));

// ---- live events -----------------------------------------------------------

function closeSocket() {
  if (socket) {
    socket.onclose = null;
    socket.close();
    socket = null;
  }
}

function connect() {
  closeSocket();
  const session = current;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams({ since: String(lastSeq) });
  if (token) params.set("token", token);
  socket = new WebSocket(`${proto}://${location.host}/ws/${session}?${params}`);
  $("#stream-state").textContent = "connecting…";
  socket.onopen = () => {
    reconnectDelay = 500;
    $("#stream-state").textContent = "live";
  };
  socket.onmessage = (msg) => {
    const event = JSON.parse(msg.data);
    if (event.seq !== undefined) {
      if (event.seq <= lastSeq) return; // already shown
      lastSeq = event.seq;
    }
    render(event);
  };
  socket.onclose = (e) => {
    if (session !== current) return;
    if (e.code === 4004) {
      $("#stream-state").textContent = "session not found";
      return;
    }
    // Reconnect and resume after the last event shown: nothing is missed.
    $("#stream-state").textContent = `reconnecting in ${Math.round(reconnectDelay / 100) / 10} s…`;
    setTimeout(() => session === current && connect(), reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 10000);
  };
}

let messageBlock = null;
const toolBlocks = new Map();
const approvalBlocks = new Map();

function append(node) {
  const box = $("#events");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.append(node);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function render(e) {
  switch (e.type) {
    case "task_started":
      messageBlock = null;
      append(el("div", { className: "event task" }, el("strong", { textContent: "Task: " }), e.task));
      break;
    case "text_delta":
      if (!messageBlock) {
        messageBlock = el("div", { className: "event message" });
        append(messageBlock);
      }
      messageBlock.textContent += e.content;
      break;
    case "tool_call": {
      messageBlock = null;
      const state = el("span", { className: "state run", textContent: "running…" });
      const result = el("pre", { textContent: "" });
      const details = el("details", { className: "event tool" },
        el("summary", {}, el("span", { className: "name", textContent: e.tool_name }), " ",
          ...(e.source ? [el("span", { className: "source", title: "called by a client, not the model", textContent: `via ${e.source}` }), " "] : []),
          state),
        el("div", { className: "muted", textContent: "arguments" }),
        el("pre", { textContent: JSON.stringify(e.arguments, null, 2) }),
        el("div", { className: "muted", textContent: "result" }), result);
      toolBlocks.set(e.tool_call_id, { state, result, details });
      append(details);
      break;
    }
    case "tool_complete": {
      const block = toolBlocks.get(e.tool_call_id);
      if (!block) break;
      block.state.textContent = `${e.is_error ? "failed" : "done"} · ${e.duration_ms} ms`;
      block.state.className = `state ${e.is_error ? "bad" : "ok"}`;
      block.result.textContent = e.result ?? "";
      if (e.is_error) block.details.open = true;
      break;
    }
    case "error":
      messageBlock = null;
      append(el("div", { className: "event error", textContent: e.message }));
      break;
    case "task_completed": {
      messageBlock = null;
      const tokens = e.usage ? ` · ${e.usage.total_tokens} tokens` : "";
      append(el("div", { className: `event done ${e.status}`, textContent: `Task ${e.status || "completed"}${tokens}` }));
      refreshSessions();
      break;
    }
    case "checkpoint_created":
      append(el("div", {
        className: "event checkpoint",
        textContent: `Checkpoint ${e.checkpoint_id.slice(0, 10)} · ${e.files_changed} files +${e.insertions} -${e.deletions}`
          + (e.skipped && e.skipped.length ? ` · left out: ${e.skipped.join(", ")}` : ""),
      }));
      if (!$("#tab-changes").hidden) loadCheckpoints();
      break;
    case "context_compacted":
      append(el("div", {
        className: "event checkpoint",
        textContent: `Conversation ${e.method === "summary" ? "summarised" : "cut"} (${e.reason === "threshold" ? "near the context window" : "the model said it was too long"}): `
          + `${e.messages_before} → ${e.messages_after} messages, ${e.chars_before} → ${e.chars_after} characters`,
      }));
      break;
    case "rewound":
      append(el("div", {
        className: "event checkpoint",
        textContent: `Rewound to ${e.checkpoint_id.slice(0, 10)} (${e.scope}): ${e.files_written} files written, ${e.files_removed} removed, ${e.messages_dropped} messages dropped`,
      }));
      break;
    case "forked":
      append(el("div", {
        className: "event checkpoint",
        textContent: `Forked from session ${e.parent_session_id} at checkpoint ${e.checkpoint_id.slice(0, 10)}`,
      }));
      break;
    case "network_request": {
      // A line per coalesced group: what was reached or refused, and why.
      const times = e.connections > 1 ? ` ×${e.connections}` : "";
      const bytes = e.decision === "allowed" ? ` · ↑${e.bytes_up} ↓${e.bytes_down} bytes` : "";
      append(el("div", {
        className: `event network ${e.decision}`,
        textContent: `${e.decision === "allowed" ? "Network" : "Network refused"}: ${e.host}:${e.port}${times}${bytes} — ${e.reason}`,
      }));
      break;
    }
    case "approval_requested": {
      // A tool call (or a connection) waits for a person: its arguments and
      // the three answers. Replay shows a pending one again after a reload.
      messageBlock = null;
      const reason = el("input", { type: "text", placeholder: "reason (for Deny; the model reads it)" });
      const answer = async (decision) => {
        try {
          const body = { decision };
          if (decision === "deny" && reason.value.trim()) body.message = reason.value.trim();
          await api("POST", `/api/sessions/${current}/approvals/${e.approval_id}`, body);
        } catch (err) {
          toast(err.message);
        }
      };
      const buttons = el("div", { className: "buttons" },
        el("button", { type: "button", className: "allow", textContent: "Allow", onclick: () => answer("allow") }),
        el("button", { type: "button", className: "allow-session", textContent: "Allow for session", onclick: () => answer("allow_session") }),
        reason,
        el("button", { type: "button", className: "deny danger", textContent: "Deny", onclick: () => answer("deny") }));
      const state = el("span", { className: "state run", textContent: `waiting until ${new Date(e.expires_at).toLocaleTimeString()}` });
      const block = el("div", { className: "event approval" },
        el("div", {}, el("strong", { textContent: "Approval needed: " }), el("span", { className: "name", textContent: e.tool_name }), " ", state),
        el("pre", { className: "subject", textContent: e.subject }),
        el("details", {}, el("summary", { textContent: "arguments" }), el("pre", { textContent: JSON.stringify(e.arguments, null, 2) })),
        buttons);
      approvalBlocks.set(e.approval_id, { block, state, buttons });
      append(block);
      break;
    }
    case "approval_resolved": {
      const found = approvalBlocks.get(e.approval_id);
      if (!found) break;
      const allowed = e.decision === "allow" || e.decision === "allow_session";
      found.buttons.remove();
      found.state.textContent = `${e.decision.replace("_", " ")} by ${e.by}${e.message ? `: ${e.message}` : ""}`;
      found.state.className = `state ${allowed ? "ok" : "bad"}`;
      found.block.classList.add("resolved");
      break;
    }
    case "file_changed":
      // The workspace changed: the file tree follows, at most twice a second.
      if (!treeRefresh) treeRefresh = setTimeout(() => { treeRefresh = null; loadTree(); }, 500);
      break;
  }
}
let treeRefresh = null;

$("#task-form").onsubmit = async (e) => {
  e.preventDefault();
  const task = $("#task-text").value.trim();
  if (!task || !current) return;
  try {
    const r = await api("POST", `/api/sessions/${current}/tasks`, { task });
    $("#task-text").value = "";
    if (r.queued) toast(r.message);
  } catch (err) {
    toast(err.message);
  }
};

$("#cancel-task").onclick = async () => {
  try {
    await api("POST", `/api/sessions/${current}/tasks/cancel`);
  } catch (err) {
    toast(err.message);
  }
};

// ---- files -----------------------------------------------------------------

async function listDir(path, ul) {
  const listing = await api("GET", `/api/sessions/${current}/files?path=${encodeURIComponent(path)}`);
  ul.replaceChildren();
  for (const item of listing.items) {
    const full = path === "." ? item.name : `${path}/${item.name}`;
    const li = el("li");
    if (item.type === "directory") {
      const children = el("ul", { hidden: true });
      const label = el("span", { className: "dir", textContent: `▸ ${item.name}/` });
      label.onclick = async () => {
        children.hidden = !children.hidden;
        label.textContent = `${children.hidden ? "▸" : "▾"} ${item.name}/`;
        if (!children.hidden) await listDir(full, children);
      };
      li.append(label, children);
    } else {
      const label = el("span", { textContent: item.name, title: `${item.size ?? 0} bytes` });
      label.dataset.path = full;
      label.onclick = () => openFile(full);
      li.append(label);
    }
    ul.append(li);
  }
}

function loadTree() {
  listDir(".", $("#tree")).catch((err) => toast(err.message));
}

async function openFile(path) {
  try {
    const f = await api("GET", `/api/sessions/${current}/files/content?path=${encodeURIComponent(path)}`);
    $("#file-path").textContent = path;
    const binary = f.encoding === "base64";
    $("#file-content").value = binary ? `(binary file: ${f.content.length} base64 characters)` : f.content;
    $("#file-content").disabled = binary;
    $("#save-file").disabled = binary;
    $("#save-file").dataset.path = path;
  } catch (err) {
    toast(err.message);
  }
}

$("#save-file").onclick = async () => {
  const path = $("#save-file").dataset.path;
  try {
    await api("POST", `/api/sessions/${current}/files/content`, { path, content: $("#file-content").value });
    $("#file-path").textContent = `${path} — saved`;
  } catch (err) {
    toast(err.message);
  }
};

// ---- changes: checkpoints, their diffs, rewind and fork ---------------------

let picked = null; // the checkpoint whose diff is shown: {checkpoint_id, seq, ...}

async function loadCheckpoints() {
  try {
    const list = await api("GET", `/api/sessions/${current}/checkpoints`);
    const ul = $("#checkpoints");
    ul.replaceChildren();
    for (const c of list.slice().reverse()) {
      const li = el("li", { className: picked && picked.checkpoint_id === c.checkpoint_id ? "selected" : "" },
        el("div", {}, el("span", { className: "id", textContent: `#${c.seq} ${c.checkpoint_id.slice(0, 10)}` }), " ",
          el("span", { className: "plus", textContent: `+${c.insertions}` }), " ",
          el("span", { className: "minus", textContent: `-${c.deletions}` }), " ",
          el("span", { className: "muted", textContent: `${c.files_changed} files` })),
        el("div", { className: "task", textContent: c.task || (c.seq === 1 ? "(the session as it was made)" : "(taken on request)") }),
        ...(c.skipped.length ? [el("div", { className: "skipped", textContent: `left out: ${c.skipped.map((s) => s.path).join(", ")}` })] : []));
      li.dataset.checkpoint = c.checkpoint_id;
      li.onclick = () => showCheckpoint(c, list);
      ul.append(li);
    }
    if (!list.length) ul.append(el("li", { className: "muted", textContent: "No checkpoints (workspace.checkpoints is off)." }));
  } catch (err) {
    toast(err.message);
  }
}

// The diff of a checkpoint against the one before it (the first: against
// nothing, so everything it holds).
async function showCheckpoint(c, list) {
  picked = c;
  document.querySelectorAll("#checkpoints li").forEach((li) => li.classList.toggle("selected", li.dataset.checkpoint === c.checkpoint_id));
  $("#fork-checkpoint").disabled = false;
  $("#rewind-checkpoint").disabled = false;
  $("#diff-title").textContent = `#${c.seq} ${c.task ? `after “${c.task}”` : c.seq === 1 ? "the session as it was made" : "taken on request"}`;
  const files = $("#diff-files");
  const patch = $("#diff-patch");
  files.replaceChildren();
  patch.replaceChildren();
  const index = list.findIndex((x) => x.checkpoint_id === c.checkpoint_id);
  if (index === 0) {
    patch.textContent = `${c.files_changed} files recorded (+${c.insertions}).`;
    return;
  }
  try {
    const diff = await api("GET", `/api/sessions/${current}/diff?from=${list[index - 1].checkpoint_id}&to=${c.checkpoint_id}`);
    for (const f of diff.files) {
      files.append(el("li", {}, el("span", { className: `status ${f.status}`, textContent: f.status }), " ",
        el("code", { textContent: f.path }), " ",
        f.binary ? el("span", { className: "muted", textContent: "binary" })
          : el("span", {}, el("span", { className: "plus", textContent: `+${f.insertions}` }), " ", el("span", { className: "minus", textContent: `-${f.deletions}` }))));
    }
    if (!diff.files.length) files.append(el("li", { className: "muted", textContent: "No changes." }));
    for (const line of diff.patch.split("\n")) {
      const kind = line.startsWith("+++") || line.startsWith("---") ? "head"
        : line.startsWith("+") ? "plus" : line.startsWith("-") ? "minus" : line.startsWith("@@") ? "hunk" : "";
      patch.append(el("span", { className: kind, textContent: `${line}\n` }));
    }
  } catch (err) {
    toast(err.message);
  }
}

$("#rewind-checkpoint").onclick = async () => {
  if (!picked) return;
  const scope = $("#rewind-scope").value;
  if (!confirm(`Take session ${current} back to checkpoint #${picked.seq} (${scope})? Later changes are lost from the workspace.`)) return;
  try {
    const r = await api("POST", `/api/sessions/${current}/rewind`, { checkpoint_id: picked.checkpoint_id, scope });
    toast(`Rewound: ${r.files_written} files written, ${r.files_removed} removed, ${r.messages_dropped} messages dropped.`);
    loadCheckpoints();
  } catch (err) {
    toast(err.message);
  }
};

$("#fork-checkpoint").onclick = async () => {
  if (!picked) return;
  try {
    const s = await api("POST", `/api/sessions/${current}/fork`, { checkpoint_id: picked.checkpoint_id });
    picked = null;
    await refreshSessions();
    openSession(s.session_id);
  } catch (err) {
    toast(err.message);
  }
};

// ---- processes -------------------------------------------------------------

async function loadProcesses() {
  try {
    const list = await api("GET", `/api/sessions/${current}/processes`);
    const body = $("#processes tbody");
    body.replaceChildren();
    for (const p of list) {
      const logs = el("button", { className: "secondary", textContent: "Logs" });
      logs.onclick = async () => {
        const r = await api("GET", `/api/sessions/${current}/processes/${p.pid}/logs?lines=200`);
        $("#process-logs").hidden = false;
        $("#process-logs").textContent = r.logs || "(no output yet)";
      };
      const stop = el("button", { className: "danger", textContent: "Stop", disabled: p.status !== "running" });
      stop.dataset.pid = p.pid;
      stop.onclick = async () => {
        try {
          const r = await api("POST", `/api/sessions/${current}/processes/${p.pid}/stop`);
          toast(r.message);
        } catch (err) {
          toast(err.message);
        }
        loadProcesses();
      };
      const status = p.status === "exited" && p.exit_code !== null ? `exited (${p.exit_code})` : p.status;
      body.append(el("tr", {},
        el("td", { textContent: p.pid }), el("td", {}, el("code", { textContent: p.cmd })),
        el("td", {}, el("span", { className: `pill ${p.status === "running" ? "ok" : ""}`, textContent: status })),
        el("td", {}, logs, " ", stop)));
    }
  } catch (err) {
    toast(err.message);
  }
}

$("#refresh-processes").onclick = loadProcesses;
$("#start-process").onsubmit = async (e) => {
  e.preventDefault();
  const cmd = $("#process-cmd").value.trim();
  if (!cmd) return;
  try {
    await api("POST", `/api/sessions/${current}/processes`, { cmd });
    $("#process-cmd").value = "";
    loadProcesses();
  } catch (err) {
    toast(err.message);
  }
};

// ---- shell -----------------------------------------------------------------

$("#shell-form").onsubmit = async (e) => {
  e.preventDefault();
  const cmd = $("#shell-cmd").value.trim();
  if (!cmd) return;
  const out = $("#shell-output");
  out.textContent = `$ ${cmd}\n…`;
  try {
    const r = await api("POST", `/api/sessions/${current}/shell`, { cmd });
    out.textContent = `$ ${cmd}\n${r.output}${r.timed_out ? "\n(timed out; killed)" : ""}\n[exit ${r.exit_code}]`;
  } catch (err) {
    out.textContent = `$ ${cmd}\n${err.message}`;
  }
};

// ---- tools -------------------------------------------------------------------

$("#show-tools").onclick = async () => {
  $("#session").hidden = true;
  $("#empty").hidden = true;
  $("#usage").hidden = true;
  $("#tools").hidden = false;
  try {
    const tools = await api("GET", "/api/tools");
    const body = $("#tools-table tbody");
    body.replaceChildren();
    for (const t of tools) {
      body.append(el("tr", {},
        el("td", {}, el("code", { textContent: t.name })),
        el("td", {}, el("span", { className: `pill ${t.enabled ? "ok" : "bad"}`, textContent: t.enabled ? "enabled" : "disabled" })),
        el("td", { textContent: t.plugin }),
        el("td", { textContent: t.description })));
    }
    // Configured MCP servers: where each runs, its state and its latest failure.
    const { mcp_servers: servers = [] } = await api("GET", "/api/plugins");
    $("#mcp-servers").hidden = servers.length === 0;
    const rows = $("#mcp-table tbody");
    rows.replaceChildren();
    for (const m of servers) {
      const pill = { ready: "ok", failed: "bad" }[m.state] || "";
      const skipped = m.skipped.length ? ` (${m.skipped.length} left out)` : "";
      rows.append(el("tr", { className: "mcp-server" },
        el("td", {}, el("code", { textContent: m.name })),
        el("td", {}, el("span", { className: `pill ${pill}`, textContent: m.state })),
        el("td", { textContent: m.command.length ? `container: ${m.command.join(" ")}` : m.url }),
        el("td", { textContent: `${m.tools.length}${skipped}` }),
        el("td", { className: "error", textContent: m.error || "" })));
    }
  } catch (err) {
    toast(err.message);
  }
};

// ---- usage -------------------------------------------------------------------

// The ledger of model calls: the caller's own, or everyone's for an admin.
async function loadUsage() {
  const days = Number($("#usage-days").value);
  const group = $("#usage-group").value;
  const from = new Date(Date.now() - (days - 1) * 86400000).toISOString().slice(0, 10);
  try {
    const r = await api("GET", `/api/usage?from=${from}&group_by=${group}`);
    $("#usage-key").textContent = group[0].toUpperCase() + group.slice(1);
    const cost = (c) => (c === undefined ? "" : c.toFixed(4));
    const cells = (u) => [u.calls, u.prompt_tokens, u.completion_tokens, u.total_tokens, cost(u.cost)]
      .map((v) => el("td", { textContent: String(v) }));
    $("#usage-table tbody").replaceChildren(...r.rows.map((u) => el("tr", { className: "usage-row" },
      el("td", {}, el("code", { textContent: u.key })), el("td", { textContent: u.model }), ...cells(u))));
    $("#usage-table tfoot").replaceChildren(el("tr", { className: "usage-total" },
      el("td", { textContent: r.principal ? `Total of ${r.principal}` : "Total" }), el("td"), ...cells(r.total)));
  } catch (err) {
    toast(err.message);
  }
}

$("#show-usage").onclick = () => {
  $("#session").hidden = true;
  $("#empty").hidden = true;
  $("#tools").hidden = true;
  $("#usage").hidden = false;
  loadUsage();
};
$("#usage-days").onchange = loadUsage;
$("#usage-group").onchange = loadUsage;

$("#set-token").onclick = () => askToken().then(() => refreshSessions().catch((err) => toast(err.message)));

refreshHealth();
refreshSessions().catch((err) => toast(err.message));
setInterval(refreshHealth, 5000);
setInterval(() => refreshSessions().catch(() => {}), 5000);
