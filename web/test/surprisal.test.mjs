// surprisal.js: -log2 p from the logits, the top five, and the running mean.
import assert from "node:assert/strict";
import { test } from "node:test";

import { SurprisalRecord, log2Softmax, topK } from "../src/surprisal.js";

test("log2Softmax is log2 of the softmax, stable for large logits", () => {
  const out = log2Softmax(Float32Array.of(1000, 1000, 1000, 1000));
  for (const v of out) assert.ok(Math.abs(v + 2) < 1e-12);
  const [a, b] = log2Softmax([Math.log(3), 0]); // p = 3/4, 1/4
  assert.ok(Math.abs(a - Math.log2(0.75)) < 1e-12 && Math.abs(b + 2) < 1e-12);
});

test("topK orders by value, lower index first on ties", () => {
  assert.deepEqual(topK([0.1, 0.5, 0.5, 0.2, 0.9, 0.0], 5), [4, 1, 2, 3, 0]);
});

test("a record scores every character but the first, and truncates", () => {
  const record = new SurprisalRecord(["a", "b", "c", "d", "e", "f"]);
  const uniform = new Float32Array(6);
  const peaked = Float32Array.of(0, 0, 0, 0, 0, Math.log(100)); // p(f) = 100/105
  record.add(0, null);
  record.add(1, uniform); // log2 6 bits
  record.add(5, peaked);
  assert.equal(record.text(), "abf");
  assert.equal(record.bits[0], null);
  assert.ok(Math.abs(record.bits[1] - Math.log2(6)) < 1e-12);
  assert.ok(Math.abs(record.bits[2] + Math.log2(100 / 105)) < 1e-6);
  assert.equal(record.top[2][0][0], "f");
  assert.ok(Math.abs(record.top[2][0][1] - 100 / 105) < 1e-6);
  assert.equal(record.top[2].length, 5);
  assert.ok(Math.abs(record.bitsPerChar() - (record.bits[1] + record.bits[2]) / 2) < 1e-12);
  record.truncate(2);
  assert.equal(record.text(), "ab");
  assert.ok(Math.abs(record.bitsPerChar() - Math.log2(6)) < 1e-12);
  record.truncate(0);
  assert.ok(Number.isNaN(record.bitsPerChar()));
});
