// The page: load an exported model, check it against its checksum, and generate text with the
// Python runtime's semantics. site.json names the engine: "c" (toolkit web's default), the
// model's generated C step compiled to WebAssembly (char_lstm_wasm.js), checked against
// site.json; or "onnx", the ONNX step graph in onnxruntime-web, checked against the manifest.
// Every character read is scored (surprisal.js) for the surprisal view; the text is kept
// across reloads; sw.js keeps the whole site for offline use.
//
// window.toolkit is the API for scripts and tests:
//   await window.toolkit.ready                       // the model is loaded
//   await window.toolkit.generate({prompt, length, temperature, topK, topP, stop, seed, pattern})
//   await window.toolkit.timeSteps({steps, rounds, model, raw})   // benchmark: µs per step
//   await window.toolkit.logits({text})              // teacher-forced logits, one row per char
//   await window.toolkit.greedyInWasm({prompt, length})   // C engine: the whole loop in wasm
//   await window.toolkit.score({text})               // surprisal of each char, bits per char

import { GenerationError, Generator } from "./generator.js";
import { SurprisalRecord } from "./surprisal.js";

const $ = (id) => document.getElementById(id);
const STEP_INPUTS = ["token", "h", "c"];
const STEP_OUTPUTS = ["logits", "h_out", "c_out"];

class ModelError extends Error {}

// onnxruntime-web, imported by the ONNX engine only: a C engine site does not carry it.
let ort = null;

// --------------------------------------------------------------------------- loading

async function fetchBytes(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new ModelError(`cannot fetch ${url}: ${err.message}`);
  }
  if (!response.ok) throw new ModelError(`model file missing: ${url} (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

async function fetchJson(url) {
  const bytes = await fetchBytes(url);
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new ModelError(`${url} is not valid JSON`);
  }
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function configureOrt() {
  ort = await import("./ort/ort.wasm.min.mjs");
  // The wasm files sit next to the page (copied from the npm package): no CDN, works offline.
  ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
  // One thread: several need cross-origin isolation (COOP/COEP headers) that a plain static
  // host does not send, and a batch-1 step is too small to split anyway.
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = "error";
}

async function createSession(bytes) {
  try {
    return await ort.InferenceSession.create(bytes, {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
  } catch (err) {
    throw new ModelError(`onnxruntime-web cannot load the model: ${err.message ?? err}`);
  }
}

/** The ONNX step graph as a generator backend: state stays in onnxruntime tensors. */
class OrtStepBackend {
  constructor(session, manifest) {
    const missing = [
      ...STEP_INPUTS.filter((n) => !session.inputNames.includes(n)),
      ...STEP_OUTPUTS.filter((n) => !session.outputNames.includes(n)),
    ];
    if (missing.length) {
      throw new ModelError(`the model is not a step graph: missing ${missing.join(", ")}`);
    }
    this.session = session;
    this.vocab = manifest.vocab;
    this.layers = manifest.model.layers;
    this.units = manifest.model.units;
    if (manifest.model.vocab_size !== this.vocab.length) {
      throw new ModelError(
        `manifest vocabulary has ${this.vocab.length} characters but the model has ${manifest.model.vocab_size}`,
      );
    }
  }

  zeroState() {
    const shape = [this.layers, 1, this.units];
    const size = this.layers * this.units;
    return {
      h: new ort.Tensor("float32", new Float32Array(size), shape),
      c: new ort.Tensor("float32", new Float32Array(size), shape),
    };
  }

  async step(token, state) {
    const out = await this.session.run({
      token: new ort.Tensor("int32", Int32Array.of(token), [1]),
      h: state.h,
      c: state.c,
    });
    if (out.logits.data.length !== this.vocab.length) {
      throw new ModelError(
        `the model gives ${out.logits.data.length} logits for a vocabulary of ${this.vocab.length}`,
      );
    }
    return { logits: out.logits.data, state: { h: out.h_out, c: out.c_out } };
  }
}

/** The C engine: the wasm module, its step as the generator's backend. */
async function createCharLstm(bytes) {
  const { loadCharLstm } = await import("./char_lstm_wasm.js");
  try {
    return await loadCharLstm(bytes);
  } catch (err) {
    throw new ModelError(err.message);
  }
}

async function loadModel(variant) {
  if (typeof WebAssembly !== "object") {
    throw new ModelError("this browser is not supported: it has no WebAssembly");
  }
  const site = await fetchJson("site.json");
  const manifest = await fetchJson("model/manifest.json");
  const engine = site.engine ?? "onnx";
  const file = site.variants[variant];
  if (!file) {
    throw new ModelError(
      `this site has no ${variant} model (has: ${Object.keys(site.variants).join(", ")})`,
    );
  }
  // The ONNX files are the manifest's; the wasm is built for the site, which records it.
  const listed = engine === "c" ? "site.json" : "manifest.json";
  const entry = engine === "c" ? site.files?.[file] : manifest.artifacts[file];
  if (!entry) throw new ModelError(`${listed} does not describe ${file}`);
  const bytes = await fetchBytes(`model/${file}`);
  let warning = null;
  if (globalThis.crypto?.subtle) {
    const digest = await sha256Hex(bytes);
    if (digest !== entry.sha256) {
      const which = engine === "c" ? "its checksum in site.json" : "its manifest checksum";
      throw new ModelError(`model file ${file} does not match ${which} (corrupted or replaced)`);
    }
  } else {
    // crypto.subtle exists only in secure contexts (https, localhost, 127.0.0.1).
    warning = `The checksum of ${file} was not checked: this page is not served over https or from localhost.`;
  }
  if (engine === "c") {
    const charLstm = await createCharLstm(bytes);
    return { site, manifest, engine, file, entry, warning, charLstm, backend: charLstm.backend() };
  }
  await configureOrt();
  const session = await createSession(bytes);
  return { site, manifest, engine, file, entry, warning, backend: new OrtStepBackend(session, manifest) };
}

// --------------------------------------------------------------------------- page

const params = new URLSearchParams(location.search);
const page = {
  model: null,
  generator: null,
  session: null, // kept for Continue
  record: null, // what the session read, with its surprisal (surprisal.js)
  promptEnd: 0, // record characters that were the prompt
  rendered: 0, // record characters shown in #output
  scored: null, // the record of the score box
  running: false,
  stopRequested: false,
};
// The text and the form are kept here across reloads; the state for Continue is rebuilt by
// reading the text again (deterministic), up to this many characters: about 4 s on a slow
// phone, 0.5 s on a laptop.
const STORAGE_KEY = "char-lstm-toolkit:page";
const MAX_SAVED = 5000;
const SAVED_FIELDS = ["prompt", "length", "temperature", "top-k", "top-p", "stop", "pattern", "shade"];
const FULL_SHADE_BITS = 8; // a character this surprising (1 in 256) gets the full shade

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function setRunning(running) {
  page.running = running;
  $("generate").disabled = running || !page.generator;
  $("continue").disabled = running || !page.session;
  $("stop-button").disabled = !running;
  $("share").disabled = running || !page.record;
  $("score-button").disabled = running || !page.generator;
}

function readOptions() {
  const number = (id) => Number($(id).value);
  return {
    length: Math.trunc(number("length")),
    temperature: number("temperature"),
    topK: Math.trunc(number("top-k")),
    topP: number("top-p"),
    stop: $("stop").value || null,
  };
}

function formatBytes(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

/** Which model and engine the page runs, and their sizes. */
function describe(model) {
  const m = model.manifest.model;
  const loss = model.manifest.source?.best_val_loss;
  const quality = loss ? `, validation loss ${loss.toFixed(3)} nats/char` : "";
  const what = `Model: ${model.manifest.name}, ${m.layers} × ${m.units} LSTM, ${m.vocab_size} characters${quality}.`;
  const e = model.entry;
  if (model.engine === "c") {
    const simd = model.charLstm.simd ? ", SIMD" : "";
    return `${what} Engine: char_lstm.c in WebAssembly (int8${simd}, 1 thread), ${model.file} ${formatBytes(e.bytes)}: ${formatBytes(e.code_bytes)} code + ${formatBytes(e.data_bytes)} weights.`;
  }
  const runtime = model.site.runtime_bytes ? `, ${formatBytes(model.site.runtime_bytes)}` : "";
  return `${what} Engine: onnxruntime-web ${ort.env.versions?.web ?? ""} (WebAssembly, 1 thread${runtime}), ${model.file} ${formatBytes(e.bytes)}.`;
}

// Give the browser a task boundary every ~16 ms (a frame) so it paints the stream and handles
// Stop. Through a MessageChannel: nested setTimeout(0) is clamped to 4 ms, longer than a step.
const channel = new MessageChannel();
const waiting = [];
channel.port1.onmessage = () => waiting.shift()?.();
const nextTask = () =>
  new Promise((resolve) => {
    waiting.push(resolve);
    channel.port2.postMessage(null);
  });

// ------------------------------------------------------------ the surprisal view

/** Spans for record characters [from, to): each shaded by its bits (CSS var --a). */
function appendChars(container, record, from, to, promptEnd = 0) {
  const fragment = document.createDocumentFragment();
  for (let i = from; i < to; i++) {
    const span = document.createElement("span");
    span.dataset.i = i;
    span.textContent = record.chars[i];
    const bits = record.bits[i];
    if (bits !== null) span.style.setProperty("--a", Math.min(bits / FULL_SHADE_BITS, 1).toFixed(2));
    if (i < promptEnd) span.className = "prompt";
    fragment.append(span);
  }
  container.append(fragment);
}

function bitsFigure(record) {
  if (!record.scored) return "";
  return `${record.bitsPerChar().toFixed(3)} bits per character over ${record.scored} characters (−log₂ p of each character under the model).`;
}

/** Show the output's record characters not yet shown, and the running bits per character. */
function renderOutput() {
  const record = page.record;
  appendChars($("output"), record, page.rendered, record.length, page.promptEnd);
  page.rendered = record.length;
  $("bits").textContent = bitsFigure(record);
}

const shown = (ch) => (ch === "\n" ? "⏎" : ch === " " ? "␣" : ch);
function percent(p) {
  if (p >= 0.095) return `${(p * 100).toFixed(0)}%`;
  if (p >= 0.00095) return `${(p * 100).toFixed(1)}%`;
  return `${(p * 100).toExponential(0)}%`;
}

function explanation(record, i) {
  const ch = shown(record.chars[i]);
  if (record.bits[i] === null) return `“${ch}”: the first character, nothing predicted it.`;
  const bits = record.bits[i];
  const top = record.top[i].map(([c, q]) => `“${shown(c)}” ${percent(q)}`).join(", ");
  return `“${ch}”: p = ${percent(2 ** -bits)}, ${bits.toFixed(2)} bits. The model expected ${top}.`;
}

/** Hover (mouse) or tap (touch) on a character: what the model expected there. */
function explainOn(container, panel, getRecord) {
  let picked = null;
  const show = (event) => {
    const span = event.target.closest?.("span[data-i]");
    const record = getRecord();
    if (!span || !record || !container.contains(span)) return;
    const i = Number(span.dataset.i);
    if (i >= record.length) return;
    picked?.classList.remove("picked");
    picked = span;
    span.classList.add("picked");
    panel.textContent = explanation(record, i);
  };
  container.addEventListener("pointerover", show);
  container.addEventListener("click", show);
}

/** A fresh session whose record follows every character it reads. */
function recordedSession() {
  const session = page.generator.session();
  const record = new SurprisalRecord(page.generator.chars);
  session.onStep = (token, logits) => record.add(token, logits);
  return { session, record };
}

async function scoreText(text, unknown = "error") {
  const { session, record } = recordedSession();
  await session.feed(text, unknown);
  return record;
}

async function onScore() {
  if (page.running) return;
  const text = $("score-text").value;
  const unknown = page.generator.unknownChars(text);
  const record = await scoreText(text, "skip");
  page.scored = record;
  const view = $("score-view");
  view.textContent = "";
  appendChars(view, record, 0, record.length);
  const skipped = unknown.length ? ` Not in the vocabulary, skipped: ${unknown.map((c) => JSON.stringify(c)).join(" ")}.` : "";
  $("score-bits").textContent = (bitsFigure(record) || "Give it at least two characters.") + skipped;
  $("score-expected").textContent = record.length ? "Tap or hover over a character to see what the model expected there." : "";
}

// ------------------------------------------------------------ patterns

// pattern.js and the regex parser load with the first pattern; compiled patterns are kept.
let patterns = null;
const compiledPatterns = new Map();

/** The compiled pattern for `source` over the model's characters, or null for none. */
async function compilePattern(source) {
  if (!source) return null;
  if (!patterns) {
    let RegExpParser;
    try {
      ({ RegExpParser } = await import("./regexpp.mjs"));
    } catch {
      throw new GenerationError("this site was built without the regex parser: run npm ci in web/, then toolkit web --force");
    }
    const { compileRegex } = await import("./pattern.js");
    const parser = new RegExpParser();
    patterns = (text) => compileRegex(text, page.generator.chars, parser);
  }
  if (!compiledPatterns.has(source)) compiledPatterns.set(source, patterns(source));
  return compiledPatterns.get(source);
}

// ------------------------------------------------------------ generating

async function runFromPage() {
  const options = readOptions();
  try {
    options.pattern = await compilePattern($("pattern").value);
    options.pattern?.checkLength(options.length);
  } catch (err) {
    showError(`Pattern: ${err.message}`);
    return;
  }
  setRunning(true);
  page.stopRequested = false;
  const output = $("output");
  const start = page.record.length;
  const started = performance.now();
  let lastPause = performance.now();
  try {
    const text = await page.session.sample({
      ...options,
      shouldStop: () => page.stopRequested,
      pause: async () => {
        if (performance.now() - lastPause < 16) return;
        renderOutput();
        await nextTask();
        lastPause = performance.now();
      },
      pauseEvery: 1,
    });
    // A stop string is cut from the text after the model read it: cut it from the view too.
    const keep = start + Array.from(text).length;
    if (page.record.length > keep) {
      page.record.truncate(keep);
      for (; page.rendered > keep; page.rendered--) output.lastChild.remove();
    }
    renderOutput();
    const count = keep - start;
    const ms = (performance.now() - started) / Math.max(count, 1);
    $("status").textContent = `${count} characters, ${ms.toFixed(2)} ms per character${page.stopRequested ? " (stopped)" : ""}`;
    save();
  } catch (err) {
    showError(err.message);
  } finally {
    setRunning(false);
  }
}

async function onGenerate(event) {
  event.preventDefault();
  if (page.running) return;
  $("error").hidden = true;
  $("warning").hidden = true;
  const prompt = $("prompt").value;
  const unknown = page.generator.unknownChars(prompt);
  if (unknown.length) {
    // Reported, not silently dropped: the model never saw these characters.
    $("warning").textContent = `Not in the model's vocabulary, skipped: ${unknown.map((c) => JSON.stringify(c)).join(" ")}`;
    $("warning").hidden = false;
  }
  const { session, record } = recordedSession();
  Object.assign(page, { session, record, rendered: 0 });
  $("output").textContent = "";
  $("expected").textContent = "";
  try {
    await session.feed(prompt || page.generator.startText, "skip");
  } catch (err) {
    showError(err.message);
    return;
  }
  page.promptEnd = record.length;
  renderOutput();
  await runFromPage();
}

async function onContinue() {
  if (!page.running && page.session) await runFromPage();
}

async function onShare() {
  const text = $("output").textContent;
  if (navigator.share) {
    try {
      await navigator.share({ text });
      return;
    } catch (err) {
      if (err.name === "AbortError") return; // the user closed the share sheet
    }
  }
  try {
    await navigator.clipboard.writeText(text);
    $("status").textContent = `Copied ${Array.from(text).length} characters.`;
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("output"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("status").textContent = "Selected the text: copy it from your browser's menu.";
  }
}

// ------------------------------------------------------------ kept across reloads

function save() {
  const form = {};
  for (const id of SAVED_FIELDS) form[id] = $(id).type === "checkbox" ? $(id).checked : $(id).value;
  const text = page.record?.text() ?? "";
  const saved = { form, promptEnd: page.promptEnd, text: text.length <= MAX_SAVED ? text : "" };
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
  } catch {
    // storage off (some private modes) or full: the page works, it just does not remember
  }
}

async function restore() {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? "null");
  } catch {
    return;
  }
  if (!saved || typeof saved !== "object") return;
  for (const id of SAVED_FIELDS) {
    const value = saved.form?.[id];
    if (value === undefined) continue;
    if ($(id).type === "checkbox") $(id).checked = Boolean(value);
    else $(id).value = String(value);
  }
  if (typeof saved.text !== "string" || !saved.text) return;
  const { session, record } = recordedSession();
  $("status").textContent = "Reading the text of the last visit again…";
  let lastPause = performance.now();
  // A new model may lack a character: skip it.
  for (const token of page.generator.encode(saved.text.slice(0, MAX_SAVED), "skip")) {
    await session.step(token);
    if (performance.now() - lastPause >= 16) {
      await nextTask(); // paint the status
      lastPause = performance.now();
    }
  }
  Object.assign(page, { session, record, rendered: 0, promptEnd: Math.min(saved.promptEnd ?? 0, record.length) });
  $("output").textContent = "";
  renderOutput();
  $("status").textContent = `Restored ${record.length} characters: Continue goes on from them.`;
}

// ------------------------------------------------------------ offline

/** The service worker (sw.js) caches the site; it says when a new version replaced the old. */
function installOffline() {
  if (!("serviceWorker" in navigator)) return; // not a secure context, or an old browser
  navigator.serviceWorker.addEventListener("message", (event) => {
    if (event.data?.type === "updated") $("update").hidden = false;
  });
  const register = () =>
    navigator.serviceWorker.register("sw.js").catch((err) => console.warn(`no offline copy: ${err.message}`));
  if (document.readyState === "complete") register();
  else addEventListener("load", register, { once: true });
}

/** iOS Safari lays the keyboard over the page instead of resizing it (as interactive-widget
 * asks Chrome to): lift the sticky buttons by the keyboard's height there. */
function keepButtonsAboveKeyboard() {
  const viewport = window.visualViewport;
  if (!viewport) return;
  const lift = () => {
    const covered = Math.max(0, innerHeight - viewport.height - viewport.offsetTop);
    document.documentElement.style.setProperty("--keyboard", `${covered}px`);
  };
  viewport.addEventListener("resize", lift);
  viewport.addEventListener("scroll", lift);
}

async function start() {
  installOffline();
  keepButtonsAboveKeyboard();
  $("reload").addEventListener("click", () => location.reload());
  const variantSelect = $("variant");
  let site;
  try {
    site = await fetchJson("site.json");
  } catch (err) {
    showError(err.message);
    throw err;
  }
  const variant = params.get("variant") ?? site.default_variant;
  for (const name of Object.keys(site.variants)) {
    const option = new Option(name, name, false, name === variant);
    variantSelect.append(option);
  }
  variantSelect.closest("label").hidden = variantSelect.options.length < 2; // nothing to choose
  variantSelect.addEventListener("change", () => {
    params.set("variant", variantSelect.value);
    location.search = params.toString();
  });
  try {
    const model = await loadModel(variant);
    page.model = model;
    page.generator = new Generator(model.backend);
    $("model-info").textContent = describe(model);
    if (model.engine === "c") $("engine").textContent = "char_lstm.c compiled to WebAssembly (int8, SIMD, 1 thread)";
    $("status").textContent = "Ready.";
    if (model.warning) {
      $("warning").textContent = model.warning;
      $("warning").hidden = false;
    }
    await restore().catch(() => localStorage.removeItem(STORAGE_KEY)); // start afresh
  } catch (err) {
    $("model-info").textContent = "No model loaded.";
    $("status").textContent = "";
    showError(err.message);
    throw err;
  }
  $("controls").addEventListener("submit", onGenerate);
  $("controls").addEventListener("change", save);
  $("stop-button").addEventListener("click", () => {
    page.stopRequested = true;
  });
  $("continue").addEventListener("click", onContinue);
  $("share").textContent = navigator.share ? "Share" : "Copy";
  $("share").addEventListener("click", onShare);
  $("score-button").addEventListener("click", onScore);
  $("pattern-example").addEventListener("change", () => {
    $("pattern").value = $("pattern-example").value;
    $("pattern-example").selectedIndex = 0;
    save();
  });
  const shade = () => $("output").classList.toggle("shaded", $("shade").checked);
  $("shade").addEventListener("change", () => {
    shade();
    save();
  });
  shade();
  explainOn($("output"), $("expected"), () => page.record);
  explainOn($("score-view"), $("score-expected"), () => page.scored);
  setRunning(false);
  const controlled = Boolean(navigator.serviceWorker?.controller);
  const readyMs = performance.now(); // since the page was opened: the benchmark's figure
  if (page.model.engine === "c") {
    const m = page.model.charLstm;
    return { variant, file: page.model.file, engine: "c", simd: m.simd, wasmBytes: page.model.entry.bytes, sha256: page.model.entry.sha256, controlled, readyMs };
  }
  return { variant, file: page.model.file, engine: "onnx", ortVersion: ort.env.versions?.web ?? null, sha256: page.model.entry.sha256, controlled, readyMs };
}

// --------------------------------------------------------------------------- API

/**
 * Mean µs per step over each round, for `model` (ONNX engine: another model file; default the
 * loaded one) at batch 1, through the generator's backend; raw (C engine): the wasm call alone.
 */
async function timeSteps({ steps = 500, rounds = 5, warmup = 50, model = null, raw = false } = {}) {
  let backend = page.model.backend;
  if (model) {
    const session = await createSession(await fetchBytes(model));
    backend = new OrtStepBackend(session, page.model.manifest);
  }
  let state = backend.zeroState();
  let token = 0;
  const charLstm = page.model.charLstm;
  const run =
    raw && charLstm
      ? async (n) => {
          for (let i = 0; i < n; i++) {
            charLstm.step(state, token);
            token = (token + 1) % backend.vocab.length;
          }
        }
      : async (n) => {
          for (let i = 0; i < n; i++) {
            const out = await backend.step(token, state);
            state = out.state;
            token = (token + 1) % backend.vocab.length;
          }
        };
  await run(warmup);
  const perRound = Math.max(1, Math.floor(steps / rounds));
  const us = [];
  for (let r = 0; r < rounds; r++) {
    // Timed in blocks: performance.now() is coarsened to 100 µs without cross-origin isolation.
    const t0 = performance.now();
    await run(perRound);
    us.push(((performance.now() - t0) * 1000) / perRound);
  }
  return { us_per_step: us, steps_per_round: perRound, threads: ort ? ort.env.wasm.numThreads : 1 };
}

const ready = start();
ready.catch(() => {}); // shown on the page; scripts see the rejection through toolkit.ready

window.toolkit = {
  ready,
  get manifest() {
    return page.model?.manifest;
  },
  get variant() {
    return page.model ? $("variant").value : null;
  },
  /** Resolves to the generated text (without the prompt); unknown prompt characters reject. */
  async generate({ prompt = "", length = 200, temperature = 1, topK = 0, topP = 1, stop = null, seed = null, unknown = "error", pattern = "" } = {}) {
    await ready;
    const compiled = await compilePattern(pattern);
    return page.generator.generate({ prompt, length, temperature, topK, topP, stop, seed, unknown, pattern: compiled });
  },
  /**
   * The logits after each character of `text`, fed from the zero state: what the exported
   * model computes here, to compare with another runtime step by step (a quantized model's
   * greedy text can part from another runtime's at a near-tie; its logits stay close).
   */
  async logits({ text = "", unknown = "error" } = {}) {
    await ready;
    const session = page.generator.session();
    const rows = [];
    for (const token of page.generator.encode(text, unknown)) {
      await session.step(token);
      rows.push(Array.from(session.logits));
    }
    return rows;
  },
  /** C engine: greedy decoding with the whole loop inside wasm (int8 argmax). */
  async greedyInWasm({ prompt = "", length = 200 } = {}) {
    await ready;
    if (!page.model.charLstm) throw new ModelError("greedyInWasm needs the C engine (toolkit web --engine c)");
    return page.model.charLstm.greedy(prompt, length);
  },
  /**
   * Teacher-forced from the zero state: each character's surprisal in bits (null for the
   * first), the top-5 [char, p] before it, and the mean over the scored characters.
   */
  async score({ text = "", unknown = "error" } = {}) {
    await ready;
    const record = await scoreText(text, unknown);
    return { chars: record.chars, bits: record.bits, top: record.top, bitsPerChar: record.bitsPerChar() };
  },
  timeSteps,
  GenerationError,
};
