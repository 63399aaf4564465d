import assert from "node:assert/strict";
import { test } from "node:test";

import {
  argmax,
  checkSamplingArgs,
  endsWith,
  nextTokenProbs,
  safeLength,
  sampleNext,
  seededRandom,
} from "../src/sampler.js";

const close = (a, b, eps = 1e-12) => Math.abs(a - b) <= eps;

test("argmax takes the first of tied maxima, like numpy", () => {
  assert.equal(argmax(Float32Array.of(1, 3, 3, 2)), 1);
  assert.equal(argmax(Float32Array.of(-5)), 0);
});

test("temperature 0 is greedy and draws no random number", () => {
  const never = () => assert.fail("random() called for greedy sampling");
  assert.equal(sampleNext(Float32Array.of(0.1, 2.5, -1), { temperature: 0 }, never), 1);
});

test("probabilities are a softmax of logits / temperature", () => {
  const logits = Float32Array.of(1, 2, 3);
  const probs = nextTokenProbs(logits, { temperature: 0.5 });
  const e = [2, 4, 6].map(Math.exp);
  const sum = e.reduce((a, b) => a + b);
  e.forEach((v, i) => assert.ok(close(probs[i], v / sum), `${probs[i]} vs ${v / sum}`));
});

test("top-k keeps the k largest, and ties at the border", () => {
  const probs = nextTokenProbs(Float32Array.of(5, 1, 3, 3, 0), { topK: 2 });
  assert.deepEqual(Array.from(probs, (p) => p > 0), [true, false, true, true, false]);
  assert.ok(close(probs.reduce((a, b) => a + b), 1));
});

test("top-p keeps the smallest set of most likely tokens reaching p", () => {
  // Probabilities 0.5, 0.3, 0.2: p = 0.6 needs the first two; p = 0.5 the first alone.
  const logits = Float64Array.from([0.5, 0.3, 0.2], Math.log);
  const two = nextTokenProbs(logits, { topP: 0.6 });
  assert.ok(close(two[0], 0.5 / 0.8, 1e-9) && close(two[1], 0.3 / 0.8, 1e-9) && two[2] === 0);
  const one = nextTokenProbs(logits, { topP: 0.5 });
  assert.deepEqual(Array.from(one), [1, 0, 0]);
});

test("inverse-CDF sampling picks by cumulative mass", () => {
  const logits = Float64Array.from([0.25, 0.25, 0.5], Math.log);
  assert.equal(sampleNext(logits, {}, () => 0.0), 0);
  assert.equal(sampleNext(logits, {}, () => 0.3), 1);
  assert.equal(sampleNext(logits, {}, () => 0.51), 2);
  assert.equal(sampleNext(logits, {}, () => 0.999999), 2);
});

test("seeded sampling repeats and follows the distribution", () => {
  const logits = Float64Array.from([0.1, 0.6, 0.3], Math.log);
  const draw = (seed) => {
    const random = seededRandom(seed);
    return Array.from({ length: 20000 }, () => sampleNext(logits, { temperature: 1 }, random));
  };
  const a = draw(7);
  assert.deepEqual(a.slice(0, 50), draw(7).slice(0, 50));
  assert.notDeepEqual(a.slice(0, 50), draw(8).slice(0, 50));
  const freq = [0, 1, 2].map((t) => a.filter((x) => x === t).length / a.length);
  [0.1, 0.6, 0.3].forEach((p, i) => assert.ok(Math.abs(freq[i] - p) < 0.02, `${freq}`));
});

test("bad sampling arguments are one clear error", () => {
  assert.throws(() => checkSamplingArgs({ temperature: -1 }), /temperature/);
  assert.throws(() => checkSamplingArgs({ topK: 1.5 }), /top-k/);
  assert.throws(() => checkSamplingArgs({ topP: 0 }), /top-p/);
  assert.throws(() => checkSamplingArgs({ topP: 1.5 }), /top-p/);
  checkSamplingArgs({ temperature: 0, topK: 3, topP: 1 });
});

test("a tail that may start the stop string is held back", () => {
  const chars = (s) => Array.from(s);
  assert.equal(safeLength(chars("hello wor"), "world"), 6);
  assert.equal(safeLength(chars("hello"), "xyz"), 5);
  assert.equal(safeLength(chars("hello"), null), 5);
  assert.equal(safeLength(chars("aa"), "aab"), 0);
  assert.ok(endsWith(chars("the end"), chars("end")));
  assert.ok(!endsWith(chars("en"), chars("end")));
});
