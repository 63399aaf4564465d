// The C engine (src/char_lstm_wasm.js): the committed model's char_lstm.c compiled to wasm,
// against the same C compiled natively. Greedy text and int8 logits must be equal, not close.
//
// The wasm modules and the native C's reference come from the Python side, made once per run:
//   python -m toolkit.web.wasm ../exported/shakespeare --out DIR
// with $TOOLKIT_PYTHON, else ../.venv/bin/python (`make setup`), else python3. Compiled files
// are cached by content in the toolkit's cache, so only a first run compiles (seconds).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { CharLstmError, loadCharLstm } from "../src/char_lstm_wasm.js";
import { Generator } from "../src/generator.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MODEL = join(ROOT, "exported", "shakespeare");

function python() {
  if (process.env.TOOLKIT_PYTHON) return process.env.TOOLKIT_PYTHON;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

let dir;
let reference;
let wasm;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "char-lstm-wasm-"));
  try {
    execFileSync(python(), ["-m", "toolkit.web.wasm", MODEL, "--out", dir], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    throw new Error(`building the test's wasm failed: ${err.stderr?.toString() || err.message}`);
  }
  reference = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8"));
  wasm = readFileSync(join(dir, "char_lstm.wasm"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test("wasm greedy text equals the native C's", async () => {
  const model = await loadCharLstm(wasm);
  assert.equal(model.simd, true);
  for (const [prompt, expected] of Object.entries(reference.greedy)) {
    assert.equal(Array.from(expected).length, reference.length);
    assert.equal(model.greedy(prompt, reference.length), expected, `prompt ${JSON.stringify(prompt)}`);
  }
});

test("teacher-forced int8 logits equal the native C's, step by step", async () => {
  const model = await loadCharLstm(wasm);
  const state = model.newState();
  const got = model.encode(reference.logits_text).map((t) => Array.from(model.step(state, t)));
  assert.deepEqual(got, reference.logits);
});

test("generator.js on the wasm backend decodes the same greedy text", async () => {
  const model = await loadCharLstm(wasm);
  const gen = new Generator(model.backend());
  const text = await gen.generate({ prompt: "ROMEO:", length: 200, temperature: 0 });
  assert.equal(text, reference.greedy["ROMEO:"].slice(0, 200));
  // Sampling runs and repeats with a seed.
  const a = await gen.generate({ prompt: "KING:", length: 50, temperature: 0.8, seed: 3 });
  const b = await gen.generate({ prompt: "KING:", length: 50, temperature: 0.8, seed: 3 });
  assert.equal(a, b);
});

test("states are independent and copyable; errors are CharLstmError", async () => {
  const model = await loadCharLstm(wasm);
  const a = model.newState();
  const b = model.newState();
  const ids = model.encode("ROMEO:");
  let la, lb;
  for (const t of ids) {
    la = Array.from(model.step(a, t));
    lb = Array.from(model.step(b, t));
  }
  assert.deepEqual(la, lb);
  const c = model.copyState(a);
  assert.deepEqual(Array.from(model.step(c, ids[0])), Array.from(model.step(a, ids[0])));
  assert.throws(() => model.step(a, model.vocabSize), CharLstmError);
  assert.throws(() => model.step(a, -1), CharLstmError);
  assert.throws(() => model.encode("Ω"), CharLstmError);
  await assert.rejects(loadCharLstm(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])), CharLstmError);
});

test("the SIMD matvec_s8 gives the portable C's bits", async () => {
  const { instance } = await WebAssembly.instantiate(readFileSync(join(dir, "matvec_check.wasm")));
  assert.equal(instance.exports.check(), 0);
  assert.ok(instance.exports.cases() > 1000);
});
