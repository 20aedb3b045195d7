// The tailorlm web UI: chat with a served System, rate its answers, list runs. One ES module, no dependencies.
//
// It talks to the server's public OpenAI-compatible API like any other client (/v1/models, /v1/chat/completions,
// /v1/feedback), plus /ui/api/runs for the Runs page. Every piece of model output is inserted as text
// (textContent), never as HTML: answers, citations and run names are untrusted.

const KEY_STORAGE = "tailorlm.apiKey";
const MODEL_STORAGE = "tailorlm.model";
const COMPARE_TEMPERATURE = 0.8; // the second answer must differ from a greedy first one to be worth comparing

const $ = (id) => document.getElementById(id);

// --- small helpers ----------------------------------------------------------------------------------------------

/** Build an element: el("button", {type: "button", dataset: {testid: "x"}}, "text", child...). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function headers(json = false) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (apiKey()) h["Authorization"] = `Bearer ${apiKey()}`;
  return h;
}

/** An error the user should read: the server's OpenAI-shaped message, with what to do about a 401/403. */
class UiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = `${response.status}: ${body.error.message}`;
  } catch {
    // not JSON (a proxy's HTML page): the status line is all we have
  }
  if (response.status === 401) message += " — save a valid API key under “API key” at the top.";
  if (response.status === 403) message += " — this needs an admin key.";
  return new UiError(message, response.status);
}

function showError(error) {
  const banner = $("banner");
  banner.textContent = error instanceof Error ? error.message : String(error);
  banner.hidden = false;
  if (error && (error.status === 401 || error.status === 403)) $("key-panel").open = true;
}

function clearError() {
  $("banner").hidden = true;
  $("banner").textContent = "";
}

function announce(text) {
  $("live").textContent = text;
}

// --- API --------------------------------------------------------------------------------------------------------

async function getJSON(url) {
  const response = await fetch(url, { headers: headers() });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

async function postFeedback(body) {
  const response = await fetch("/v1/feedback", {
    method: "POST",
    headers: headers(true),
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/**
 * Stream one chat completion. A POST, so not EventSource: fetch, then parse the server-sent events ourselves.
 * Calls onDelta(text) for each piece of content and onToolCalls(deltas) for tool-call fragments; resolves with the
 * final choice's extra fields ({response_id, citations, abstained, finish_reason}).
 */
async function streamChat({ model, messages, temperature, signal, onDelta, onToolCalls }) {
  const body = { model, messages, stream: true };
  if (temperature !== undefined) body.temperature = temperature;
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(true),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorOf(response);

  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let final = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    // An event ends at a blank line; a network chunk may hold several events, or half of one.
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return final || {};
      const chunk = JSON.parse(data);
      // Errors after the 200 (a timeout, a failed generation) arrive as an event in OpenAI's error shape.
      if (chunk.error) throw new UiError(chunk.error.message || "the server reported an error");
      for (const choice of chunk.choices || []) {
        if (choice.index !== 0) continue; // the UI asks for one answer (n = 1)
        const delta = choice.delta || {};
        if (delta.content) onDelta(delta.content);
        if (delta.tool_calls) onToolCalls(delta.tool_calls);
        if (choice.finish_reason) final = { ...choice };
      }
    }
  }
  if (final) return final;
  throw new UiError("the answer stream ended early (the connection was closed)");
}

// --- models -----------------------------------------------------------------------------------------------------

let models = [];

async function loadModels() {
  const select = $("model");
  try {
    const list = await getJSON("/v1/models");
    models = list.data || [];
  } catch (error) {
    showError(error);
    return;
  }
  const previous = localStorage.getItem(MODEL_STORAGE);
  select.replaceChildren(
    ...models.map((m) =>
      el("option", { value: m.id }, m.id + (m.rag ? " (RAG)" : "") + (m.experiment ? " (A/B experiment)" : "")),
    ),
  );
  if (models.some((m) => m.id === previous)) select.value = previous;
  describeModel();
}

function describeModel() {
  const m = models.find((x) => x.id === $("model").value);
  $("model-info").textContent = !m ? "" : m.experiment ? "an A/B experiment" : m.engine ? `engine: ${m.engine}` : "";
}

// --- the conversation -------------------------------------------------------------------------------------------

// What the model sees: every user turn and the answer shown for it. Feedback never rewrites it.
let conversation = [];
let controller = null; // aborts the answer being streamed (Stop, New conversation)

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").hidden = !busy;
  $("model").disabled = busy;
  // One stream at a time: the compare buttons wait too, since a second answer is a stream of its own.
  document.querySelectorAll("[data-needs-idle]").forEach((b) => (b.disabled = busy));
}

function addUserTurn(text) {
  $("empty-chat").hidden = true;
  $("conversation").append(
    el("li", { class: "turn user", dataset: { testid: "user-message" } }, el("p", { class: "who" }, "You"),
      el("div", { class: "text" }, text)),
  );
}

/** An answer's body: its streamed text, tool steps, citations. Returns handles the stream fills in. */
function answerBody(testid) {
  const text = el("div", { class: "text", dataset: { testid } });
  const tools = el("div", { class: "tools" });
  const sources = el("div", { class: "sources" });
  const body = el("div", { class: "answer-body" }, tools, text, sources);
  const calls = []; // tool calls by index, assembled from streamed fragments
  return {
    body,
    text,
    content: "",
    append(delta) {
      this.content += delta;
      text.textContent = this.content;
    },
    toolCalls(deltas) {
      // OpenAI streams a tool call in fragments: the first carries id and name, the rest pieces of the arguments.
      for (const d of deltas) {
        const i = d.index ?? calls.length;
        const call = (calls[i] ||= { name: "", args: "", id: d.id || "" });
        if (d.function?.name) call.name += d.function.name;
        if (d.function?.arguments) call.args += d.function.arguments;
      }
      tools.replaceChildren(
        ...calls.filter(Boolean).map((c) =>
          el("details", { class: "tool-step", dataset: { testid: "tool-step" } },
            el("summary", {}, `Tool step: ${c.name || "(unnamed)"}`),
            el("pre", {}, c.args || "(no arguments)")),
        ),
      );
    },
    finish(final) {
      if (!this.content.trim()) {
        text.append(el("span", { class: "muted" }, this.content ? "(only whitespace)" : "(empty answer)"));
      }
      if (final.abstained) {
        sources.append(el("p", { class: "abstained" }, "The System abstained: its sources did not hold an answer."));
      }
      if (Array.isArray(final.citations) && final.citations.length) sources.append(citationList(final.citations));
    },
  };
}

function citationList(citations) {
  return el("details", { class: "citations", open: true, dataset: { testid: "citations" } },
    el("summary", {}, `Sources (${citations.length})`),
    el("ol", {}, citations.map((c) => {
      const label = c.title || c.doc_id || c.chunk_id || "source";
      const snippet = c.snippet || c.text || c.quote;
      return el("li", { value: Number.isInteger(c.n) ? c.n : undefined, dataset: { testid: "citation" } },
        el("strong", {}, label),
        c.source && c.source !== label ? el("span", { class: "muted" }, ` — ${c.source}`) : null,
        snippet ? el("blockquote", {}, snippet) : null);
    })));
}

async function send(text) {
  const model = $("model").value;
  if (!model) return showError("No model to talk to: the server lists none (or the API key was refused).");
  clearError();
  addUserTurn(text);
  conversation.push({ role: "user", content: text });
  const prefix = conversation.slice(); // the conversation this answer replies to (compare re-asks it)

  const answer = answerBody("answer-text");
  const item = el("li", { class: "turn assistant", dataset: { testid: "answer" }, "aria-busy": "true" },
    el("p", { class: "who" }, model), answer.body);
  $("conversation").append(item);
  item.scrollIntoView({ block: "end" });

  controller = new AbortController();
  setBusy(true);
  try {
    const final = await streamChat({
      model, messages: prefix, signal: controller.signal,
      onDelta: (d) => answer.append(d), onToolCalls: (t) => answer.toolCalls(t),
    });
    answer.finish(final);
    conversation.push({ role: "assistant", content: answer.content });
    item.dataset.responseId = final.response_id || "";
    if (final.response_id) item.append(feedbackBar({ responseId: final.response_id, answer, model, prefix }));
    announce("Answer complete.");
  } catch (error) {
    conversation.pop(); // the turn got no answer: leave it out of the context of the next one
    item.classList.add("failed");
    if (error.name === "AbortError") answer.text.append(el("span", { class: "muted" }, " (stopped)"));
    else {
      answer.text.append(el("span", { class: "muted" }, " (no answer)"));
      showError(error);
    }
  } finally {
    item.removeAttribute("aria-busy");
    controller = null;
    setBusy(false);
  }
}

// --- feedback ---------------------------------------------------------------------------------------------------

const THUMB = "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6C6.2 8 6 8.5 6 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z";

function thumbIcon(down) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", down ? "icon down" : "icon");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", THUMB);
  svg.append(path);
  return svg;
}

/** The buttons under an answer: thumbs, edit, compare; each posts to /v1/feedback and confirms once stored. */
function feedbackBar({ responseId, answer, model, prefix }) {
  const status = el("span", { class: "feedback-status", role: "status", dataset: { testid: "feedback-status" } });
  const panel = el("div", { class: "feedback-panel" });

  async function submit(body, done) {
    status.textContent = "Saving…";
    try {
      await postFeedback({ response_id: responseId, ...body });
      status.textContent = "✓ Feedback saved";
      status.classList.add("ok");
      done?.();
    } catch (error) {
      status.textContent = "Not saved";
      showError(error);
    }
  }

  const up = el("button", {
    type: "button", class: "icon-button", "aria-pressed": "false", dataset: { testid: "thumbs-up" },
    onclick: () => submit({ rating: "up" }, () => press(up)),
  }, thumbIcon(false), el("span", {}, "Good"));
  const down = el("button", {
    type: "button", class: "icon-button", "aria-pressed": "false", dataset: { testid: "thumbs-down" },
    onclick: () => submit({ rating: "down" }, () => press(down)),
  }, thumbIcon(true), el("span", {}, "Bad"));
  function press(which) {
    for (const b of [up, down]) b.setAttribute("aria-pressed", String(b === which));
  }

  const edit = el("button", {
    type: "button", class: "secondary", "aria-expanded": "false", dataset: { testid: "edit" },
    onclick: () => toggle(edit, () => editForm(answer.content, (text) => submit({ edited: text }, () => toggle(edit)))),
  }, "Edit");
  const compare = el("button", {
    type: "button", class: "secondary", "aria-expanded": "false", dataset: { testid: "compare", needsIdle: "1" },
    onclick: () => toggle(compare, () => comparePanel({ answer, model, prefix, submit })),
  }, "Compare");

  // One panel open at a time under an answer (edit or compare); its button says whether it is open.
  function toggle(button, build) {
    const open = button.getAttribute("aria-expanded") === "true";
    for (const b of [edit, compare]) b.setAttribute("aria-expanded", "false");
    panel.replaceChildren();
    if (!open && build) {
      button.setAttribute("aria-expanded", "true");
      panel.append(build());
      panel.querySelector("textarea, button")?.focus();
    }
  }

  return el("div", { class: "feedback" },
    el("div", { class: "feedback-buttons", role: "group", "aria-label": "Feedback on this answer" },
      up, down, edit, compare, status),
    panel);
}

function editForm(original, onSubmit) {
  const id = `edit-${crypto.randomUUID()}`;
  const area = el("textarea", { id, rows: "5", required: true, dataset: { testid: "edit-text" } });
  area.value = original;
  return el("form", {
    class: "edit-form",
    onsubmit: (event) => {
      event.preventDefault();
      if (area.value.trim()) onSubmit(area.value);
    },
  },
  el("label", { for: id }, "A better answer (stored as your correction; the conversation keeps the original)"),
  area,
  el("div", { class: "row" }, el("button", { type: "submit", dataset: { testid: "edit-submit" } }, "Submit edit")));
}

/** Ask for a second answer to the same conversation and let the user pick the better one. */
function comparePanel({ model, answer, prefix, submit }) {
  const right = answerBody("compare-right-text");
  const choices = [
    ["this", "Left is better", "compare-left-better"],
    ["other", "Right is better", "compare-right-better"],
    ["tie", "Tie", "compare-tie"],
  ].map(([choice, label, testid]) =>
    el("button", { type: "button", disabled: true, dataset: { testid, choice } }, label));
  const row = el("div", { class: "row", role: "group", "aria-label": "Which answer is better?" }, choices);
  const panel = el("div", { class: "compare", dataset: { testid: "compare-panel" } },
    el("div", { class: "compare-grid" },
      el("section", { class: "side", "aria-label": "Left: the first answer" },
        el("h2", {}, "Left: first answer"), el("div", { class: "text" }, answer.content)),
      el("section", { class: "side", "aria-label": "Right: a second answer", "aria-busy": "true" },
        el("h2", {}, `Right: second answer (temperature ${COMPARE_TEMPERATURE})`), right.body)),
    row);

  (async () => {
    controller = new AbortController();
    setBusy(true);
    try {
      const final = await streamChat({
        model, messages: prefix, temperature: COMPARE_TEMPERATURE, signal: controller.signal,
        onDelta: (d) => right.append(d), onToolCalls: (t) => right.toolCalls(t),
      });
      right.finish(final);
      if (!final.response_id) throw new UiError("the second answer came without a response id");
      for (const button of choices) {
        button.disabled = false;
        button.addEventListener("click", () =>
          submit({ compare_to: final.response_id, choice: button.dataset.choice }, () => {
            for (const b of choices) b.disabled = true;
            button.setAttribute("aria-pressed", "true");
          }));
      }
      choices[0].focus();
    } catch (error) {
      right.text.append(el("span", { class: "muted" }, " (no answer)"));
      if (error.name !== "AbortError") showError(error);
    } finally {
      panel.querySelector("[aria-busy]")?.removeAttribute("aria-busy");
      controller = null;
      setBusy(false);
    }
  })();
  return panel;
}

// --- runs -------------------------------------------------------------------------------------------------------

function formatMetric(value) {
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(3);
}

async function loadRuns() {
  const status = $("runs-status");
  const body = $("runs-body");
  status.textContent = "Loading…";
  let list;
  try {
    list = await getJSON("/ui/api/runs");
  } catch (error) {
    body.replaceChildren();
    status.textContent = "";
    showError(error);
    return;
  }
  clearError();
  const runs = list.data || [];
  status.textContent = runs.length
    ? `${runs.length} run${runs.length === 1 ? "" : "s"} in ${list.runs_dir}, newest first.`
    : `No runs in ${list.runs_dir} yet: tailor train, tailor eval and tailor ladder write them there.`;
  body.replaceChildren(...runs.map((run) => {
    const created = run.created_at ? new Date(run.created_at) : null;
    const metrics = Object.entries(run.metrics || {}).map(([k, v]) => `${k}: ${formatMetric(v)}`).join(", ");
    return el("tr", { dataset: { testid: "run-row", runId: run.id } },
      el("th", { scope: "row" }, el("span", { class: "run-id" }, run.id),
        run.name && run.name !== run.id ? el("span", { class: "muted block" }, run.name) : null),
      el("td", {}, [run.kind, run.technique].filter(Boolean).join(" · ") || "–"),
      el("td", {}, el("span", { class: `status status-${run.status}` }, run.status)),
      el("td", {}, created ? el("time", { datetime: run.created_at }, created.toLocaleString()) : "–"),
      el("td", { class: "metrics" }, metrics || "–"),
      el("td", {}, run.report
        ? el("a", { href: run.report, dataset: { testid: "run-report-link" } }, "Open report",
          el("span", { class: "visually-hidden" }, ` of ${run.id}`))
        : el("span", { class: "muted" }, "none")));
  }));
}

// --- pages and wiring -------------------------------------------------------------------------------------------

function route() {
  const runs = location.hash === "#runs";
  $("view-chat").hidden = runs;
  $("view-runs").hidden = !runs;
  for (const [link, current] of [[$("nav-chat"), !runs], [$("nav-runs"), runs]]) {
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clearError();
  if (runs) loadRuns();
  else $("message").focus();
}

function showKeyState() {
  $("key-state").textContent = apiKey() ? "saved" : "none";
  $("api-key").value = apiKey();
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value.trim();
    if (!text || $("send").disabled) return;
    $("message").value = "";
    send(text);
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => controller?.abort());
  $("new-chat").addEventListener("click", () => {
    controller?.abort();
    conversation = [];
    $("conversation").replaceChildren();
    $("empty-chat").hidden = false;
    clearError();
    $("message").focus();
  });
  $("model").addEventListener("change", () => {
    localStorage.setItem(MODEL_STORAGE, $("model").value);
    describeModel();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    showKeyState();
    $("key-panel").open = false;
    clearError();
    loadModels();
    if (location.hash === "#runs") loadRuns();
  });
  $("api-key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    showKeyState();
  });
  $("runs-refresh").addEventListener("click", loadRuns);
  window.addEventListener("hashchange", route);
}

wire();
showKeyState();
loadModels();
route();
