// The NPS prompt: asks the loop whether to show it, shows it in a shadow root, and sends the answer
// once (the same response id on every retry, kept in localStorage until the loop took it).
// No dependencies, no inline script or styles, no eval: runs under a strict Content-Security-Policy.

const VERSION = "1.0.0";
const STORE = "nps-widget:";
const BANDS = { detractor: [0, 6], passive: [7, 8], promoter: [9, 10] };

const DEFAULT_TEXT = {
  title: "Quick question",
  question: "How likely are you to recommend us to a friend or colleague?",
  low: "Not at all likely",
  high: "Extremely likely",
  why: {
    detractor: "We are sorry. What went wrong?",
    passive: "Thanks! What would make it a 10?",
    promoter: "Great to hear! What do you like most?",
  },
  placeholder: "Your comment (optional)",
  send: "Send",
  close: "Close",
  thanks: "Thank you! Your answer helps us improve.",
};

const CSS = `
:host { all: initial; }
.nps { --nps-bg: #ffffff; --nps-fg: #1d2330; --nps-muted: #5b6475; --nps-accent: #2f5bea; --nps-border: #c9cfdb;
  --nps-selected-fg: #ffffff; --nps-radius: 10px; --nps-font: system-ui, -apple-system, "Segoe UI", sans-serif;
  position: fixed; inset: auto 16px 16px auto; z-index: 2147483000; box-sizing: border-box;
  width: min(440px, calc(100vw - 16px)); max-width: calc(100vw - 16px); padding: 18px;
  background: var(--nps-bg); color: var(--nps-fg); font: 15px/1.4 var(--nps-font);
  border: 1px solid var(--nps-border); border-radius: var(--nps-radius); box-shadow: 0 8px 28px rgba(0,0,0,.18); }
@media (prefers-color-scheme: dark) {
  .nps { --nps-bg: #1c2029; --nps-fg: #eef1f6; --nps-muted: #a9b1c2; --nps-accent: #7d9bff; --nps-border: #3a4150;
    --nps-selected-fg: #10131a; }
}
@media (max-width: 480px) { .nps { inset: auto 8px 8px 8px; width: auto; padding: 14px; } }
.nps * { box-sizing: border-box; font: inherit; color: inherit; }
.nps h2 { margin: 0 28px 8px 0; font-size: 16px; font-weight: 650; }
.nps p { margin: 0 0 8px; }
.nps fieldset { border: 0; margin: 0; padding: 0; min-width: 0; }
.nps legend { padding: 0; margin: 0 0 10px; }
.scale { display: grid; grid-template-columns: repeat(11, 1fr); gap: 4px; }
.more { margin-top: 14px; }
.scale label { position: relative; }
.scale input { position: absolute; opacity: 0; inset: 0; margin: 0; }
.scale span { display: flex; align-items: center; justify-content: center; min-height: 36px;
  border: 1px solid var(--nps-border); border-radius: 6px; cursor: pointer; user-select: none; }
.scale input:checked + span { background: var(--nps-accent); border-color: var(--nps-accent); color: var(--nps-selected-fg); }
.scale input:focus-visible + span { outline: 3px solid var(--nps-accent); outline-offset: 2px; }
.ends { display: flex; justify-content: space-between; gap: 8px; margin: 6px 0 0; color: var(--nps-muted); font-size: 13px; }
.nps textarea { display: block; width: 100%; min-height: 72px; margin: 0 0 10px; padding: 8px; resize: vertical;
  background: transparent; border: 1px solid var(--nps-border); border-radius: 6px; }
.nps button { cursor: pointer; border-radius: 6px; padding: 8px 14px; border: 1px solid var(--nps-accent); }
.nps .send { font-weight: 600; background: var(--nps-accent); color: var(--nps-selected-fg); }
.nps .close { position: absolute; top: 10px; right: 10px; width: 32px; height: 32px; padding: 0;
  background: transparent; border: 0; font-size: 20px; line-height: 1; }
button:focus-visible, textarea:focus-visible { outline: 3px solid var(--nps-accent); outline-offset: 2px; }
[hidden] { display: none !important; }
`;

let sheet = null;

function styles() {
  if (!sheet) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
  }
  return sheet;
}

function band(score) {
  for (const name in BANDS) if (score >= BANDS[name][0] && score <= BANDS[name][1]) return name;
  return "passive";
}

function uuid() {
  return crypto.randomUUID();
}

function storage() {
  try {
    return window.localStorage;
  } catch (_) {
    return null; // blocked (a sandboxed frame, privacy settings): the answer is still sent, not kept
  }
}

function readPending(key) {
  const store = storage();
  try {
    return JSON.parse((store && store.getItem(STORE + "pending:" + key)) || "[]");
  } catch (_) {
    return [];
  }
}

function writePending(key, items) {
  const store = storage();
  if (!store) return;
  if (items.length) store.setItem(STORE + "pending:" + key, JSON.stringify(items));
  else store.removeItem(STORE + "pending:" + key);
}

function anonymousId() {
  const store = storage();
  let id = store && store.getItem(STORE + "anonymous-id");
  if (!id) {
    id = uuid();
    if (store) store.setItem(STORE + "anonymous-id", id);
  }
  return id;
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// One call to the loop. Resolves with the response, or null when the network failed.
async function call(options, method, path, body) {
  const init = { method, mode: "cors", credentials: "omit", headers: { Authorization: "Bearer " + options.key } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(options.api + path, init);
  } catch (_) {
    return null;
  }
}

// Sends an answer until the loop takes it (202), or says it never will (4xx other than 408/429):
// retried with the same response_id, waiting as Retry-After says; kept for the next page load if
// it could not be sent now.
async function deliver(options, answer, attempts) {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const reply = await call(options, "POST", "/v1/responses", answer);
    if (reply && reply.status === 202) return true;
    if (reply && reply.status < 500 && reply.status !== 408 && reply.status !== 429) return false;
    const after = reply && Number(reply.headers.get("Retry-After"));
    await sleep(after > 0 ? Math.min(after, 30) * 1000 : 500 * 2 ** attempt);
  }
  return null; // not sent yet: kept
}

async function flush(options) {
  const waiting = readPending(options.key);
  if (!waiting.length) return;
  const left = [];
  for (const answer of waiting) if ((await deliver(options, answer, 2)) === null) left.push(answer);
  writePending(options.key, left);
}

function el(tag, attributes, children) {
  const node = document.createElement(tag);
  for (const name in attributes || {}) {
    const value = attributes[name];
    if (value === true) node.setAttribute(name, "");
    else if (value !== false && value != null) node.setAttribute(name, String(value));
  }
  for (const child of children || []) node.append(child);
  return node;
}

function settle(options) {
  const text = Object.assign({}, DEFAULT_TEXT, options.text || {});
  text.why = Object.assign({}, DEFAULT_TEXT.why, (options.text && options.text.why) || {});
  const api = (options.api || "").replace(/\/+$/, "");
  return Object.assign({}, options, { text, api });
}

function view(text) {
  const radios = [];
  const options = [];
  for (let score = 0; score <= 10; score++) {
    const radio = el("input", { type: "radio", name: "score", value: score, "aria-label": String(score) });
    radios.push(radio);
    options.push(el("label", {}, [radio, el("span", { "aria-hidden": "true" }, [String(score)])]));
  }
  const question = el("legend", { id: "nps-question" }, [text.question]);
  const scale = el("fieldset", { "aria-describedby": "nps-ends" }, [
    question,
    el("div", { class: "scale" }, options),
    el("div", { class: "ends", id: "nps-ends" }, [el("span", {}, [text.low]), el("span", {}, [text.high])]),
  ]);
  const why = el("label", { for: "nps-comment", id: "nps-why" }, []);
  const comment = el("textarea", { id: "nps-comment", placeholder: text.placeholder, maxlength: 5000 });
  const send = el("button", { type: "submit", class: "send" }, [text.send]);
  const more = el("div", { class: "more", hidden: true }, [el("p", {}, [why]), comment, send]);
  const thanks = el("p", { hidden: true, role: "status" }, [text.thanks]);
  const close = el("button", { type: "button", class: "close", "aria-label": text.close }, ["\u00d7"]);
  const form = el("form", { novalidate: true }, [scale, more]);
  const title = el("h2", { id: "nps-title" }, [text.title]);
  const dialog = el("div", { class: "nps", role: "dialog", "aria-modal": "false", "aria-labelledby": "nps-title" }, [
    title,
    close,
    form,
    thanks,
  ]);
  return { dialog, form, radios, more, why, comment, send, thanks, close, scale };
}

// The prompt's tab stops in order (the radio group is one: its checked option, else the first).
function tabStops(ui) {
  if (ui.form.hidden) return [ui.close];
  const radio = ui.radios.find((r) => r.checked) || ui.radios[0];
  return ui.more.hidden ? [ui.close, radio] : [ui.close, radio, ui.comment, ui.send];
}

/**
 * Shows the prompt if the loop says to. Resolves once it is closed (or not shown), with what happened.
 * options: key, survey, api, respondentId, respondentHash, attributes, text, container.
 */
async function prompt(input) {
  const options = settle(input);
  if (!options.key || !options.survey) throw new Error("nps: key and survey are required");
  const respondentId = options.respondentId || anonymousId();
  const who = { respondent_id: respondentId, survey_id: options.survey };
  if (options.respondentHash) who.respondent_hash = options.respondentHash;
  await flush(options);
  const query = new URLSearchParams(who).toString();
  const asked = await call(options, "GET", "/v1/prompt?" + query);
  if (!asked || asked.status !== 200) return { shown: false, reason: asked ? "status_" + asked.status : "network" };
  const decision = await asked.json();
  if (!decision.show) return { shown: false, reason: decision.reason };

  const impression = uuid();
  const seen = Object.assign({ impression_id: impression }, who, options.attributes ? { attributes: options.attributes } : {});
  call(options, "POST", "/v1/impressions", Object.assign({ action: "shown" }, seen));

  const ui = view(options.text);
  const host = el("div", { "data-nps-widget": VERSION });
  const root = host.attachShadow({ mode: "open" });
  root.adoptedStyleSheets = [styles()];
  root.append(ui.dialog);
  (options.container || document.body).append(host);
  const before = document.activeElement;
  ui.radios[0].focus();

  let score = null;
  let done;
  const finished = new Promise((resolve) => (done = resolve));

  function end(result) {
    document.removeEventListener("keydown", onKey, true);
    host.remove();
    if (before && typeof before.focus === "function") before.focus();
    done(result);
  }

  async function submit() {
    if (score === null) return;
    ui.send.disabled = true;
    const text = ui.comment.value.trim();
    const answer = Object.assign({ response_id: uuid(), score, invitation_id: impression }, who, text ? { comment: text } : {}, options.attributes ? { attributes: options.attributes } : {});
    writePending(options.key, readPending(options.key).concat([answer]));
    ui.form.hidden = true;
    ui.thanks.hidden = false;
    ui.close.focus();
    setTimeout(() => host.isConnected && end({ shown: true, answered: true, score }), options.thanksMs ?? 4000);
    const sent = await deliver(options, answer, 4);
    if (sent !== null) writePending(options.key, readPending(options.key).filter((a) => a.response_id !== answer.response_id));
    return sent;
  }

  async function dismiss() {
    if (!ui.thanks.hidden) return end({ shown: true, answered: true, score });
    if (score !== null) {
      await submit(); // a score picked and the prompt closed: the score is the answer
      return end({ shown: true, answered: true, score });
    }
    call(options, "POST", "/v1/impressions", Object.assign({ action: "dismissed" }, seen));
    end({ shown: true, answered: false });
  }

  function onKey(event) {
    if (!host.isConnected) return;
    if (event.key === "Escape") {
      event.preventDefault();
      dismiss();
    } else if (event.key === "Tab") {
      const stops = tabStops(ui);
      const at = stops.indexOf(root.activeElement);
      if (at === -1 || (event.shiftKey && at === 0) || (!event.shiftKey && at === stops.length - 1)) {
        event.preventDefault();
        stops[event.shiftKey ? stops.length - 1 : 0].focus();
      }
    }
  }
  document.addEventListener("keydown", onKey, true);

  for (const radio of ui.radios) {
    radio.addEventListener("change", () => {
      score = Number(radio.value);
      ui.why.textContent = options.text.why[band(score)];
      ui.more.hidden = false;
    });
    radio.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        if (score === null) radio.click();
        ui.comment.focus();
      }
    });
  }
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  ui.close.addEventListener("click", () => dismiss());
  return finished;
}
