// The page: load an exported model, check it against its checksum, and generate text with the
// Python runtime's semantics. site.json names the engine: "onnx" (the default), the ONNX step
// graph in onnxruntime-web, checked against the manifest; or "c", the model's generated C
// step compiled to WebAssembly (char_lstm_wasm.js), checked against site.json.
//
// window.toolkit is the API for scripts and tests:
//   await window.toolkit.ready                       // the model is loaded
//   await window.toolkit.generate({prompt, length, temperature, topK, topP, stop, seed})
//   await window.toolkit.timeSteps({steps, rounds, model, raw})   // benchmark: µs per step
//   await window.toolkit.logits({text})              // teacher-forced logits, one row per char
//   await window.toolkit.greedyInWasm({prompt, length})   // C engine: the whole loop in wasm

import { GenerationError, Generator } from "./generator.js";

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
  running: false,
  stopRequested: false,
};

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function setRunning(running) {
  page.running = running;
  $("generate").disabled = running || !page.generator;
  $("continue").disabled = running || !page.session;
  $("stop-button").disabled = !running;
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

function describe(model) {
  const m = model.manifest.model;
  const kib = (model.entry.bytes / 1024).toFixed(0);
  const loss = model.manifest.source?.best_val_loss;
  const quality = loss ? `, validation loss ${loss.toFixed(3)} nats/char` : "";
  const what = model.engine === "c" ? `, the int8 C step in WebAssembly${model.charLstm.simd ? " SIMD" : ""}` : "";
  return `${model.manifest.name}: ${m.layers} × ${m.units} LSTM, ${m.vocab_size} characters, ${model.file} (${kib} KiB${what}${quality})`;
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
let lastPause = 0;
async function letThePagePaint() {
  if (performance.now() - lastPause < 16) return;
  await nextTask();
  lastPause = performance.now();
}

async function runFromPage(session, prefix) {
  const options = readOptions();
  setRunning(true);
  page.stopRequested = false;
  const output = $("output");
  if (prefix !== null) {
    output.textContent = "";
    const bold = document.createElement("span");
    bold.className = "prompt";
    bold.textContent = prefix;
    output.append(bold);
  }
  const stream = document.createTextNode("");
  output.append(stream);
  const started = performance.now();
  let count = 0;
  try {
    await session.sample({
      ...options,
      onText: (text) => {
        stream.appendData(text);
        count += Array.from(text).length;
      },
      shouldStop: () => page.stopRequested,
      pause: letThePagePaint,
      pauseEvery: 1,
    });
    const ms = (performance.now() - started) / Math.max(count, 1);
    $("status").textContent = `${count} characters, ${ms.toFixed(2)} ms per character${page.stopRequested ? " (stopped)" : ""}`;
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
  const session = page.generator.session();
  page.session = session;
  try {
    await session.feed(prompt || page.generator.startText, "skip");
  } catch (err) {
    showError(err.message);
    return;
  }
  await runFromPage(session, prompt);
}

async function onContinue() {
  if (!page.running && page.session) await runFromPage(page.session, null);
}

async function start() {
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
  } catch (err) {
    $("model-info").textContent = "No model loaded.";
    $("status").textContent = "";
    showError(err.message);
    throw err;
  }
  $("controls").addEventListener("submit", onGenerate);
  $("stop-button").addEventListener("click", () => {
    page.stopRequested = true;
  });
  $("continue").addEventListener("click", onContinue);
  setRunning(false);
  if (page.model.engine === "c") {
    const m = page.model.charLstm;
    return { variant, file: page.model.file, engine: "c", simd: m.simd, wasmBytes: page.model.entry.bytes };
  }
  return { variant, file: page.model.file, engine: "onnx", ortVersion: ort.env.versions?.web ?? null };
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
  async generate({ prompt = "", length = 200, temperature = 1, topK = 0, topP = 1, stop = null, seed = null, unknown = "error" } = {}) {
    await ready;
    return page.generator.generate({ prompt, length, temperature, topK, topP, stop, seed, unknown });
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
  timeSteps,
  GenerationError,
};
