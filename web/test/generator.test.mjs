import assert from "node:assert/strict";
import { test } from "node:test";

import { Generator } from "../src/generator.js";

// A fake step backend over "\nabc!": the state counts the steps; the most likely next token
// after `t` is t + 1 (wrapping), so greedy text cycles through the vocabulary.
const VOCAB = ["\n", "a", "b", "c", "!"];
function fakeBackend(log = []) {
  return {
    vocab: VOCAB,
    zeroState: () => ({ steps: 0 }),
    async step(token, state) {
      log.push(token);
      const logits = new Float32Array(VOCAB.length);
      logits[(token + 1) % VOCAB.length] = 5;
      return { logits, state: { steps: state.steps + 1 } };
    },
  };
}

test("greedy generation warms up on the prompt, then follows the model", async () => {
  const log = [];
  const gen = new Generator(fakeBackend(log));
  const text = await gen.generate({ prompt: "ab", length: 6, temperature: 0 });
  assert.equal(text, "c!\nabc");
  // Prompt (2 steps) plus one step per generated character: the kept state includes them.
  assert.deepEqual(log, [1, 2, 3, 4, 0, 1, 2, 3]);
});

test("an empty prompt starts after a line break", async () => {
  const gen = new Generator(fakeBackend());
  assert.equal(await gen.generate({ prompt: "", length: 3, temperature: 0 }), "abc");
});

test("the stop string ends generation and is not returned; streaming equals the result", async () => {
  const gen = new Generator(fakeBackend());
  const streamed = [];
  const session = gen.session();
  await session.feed("a");
  const text = await session.sample({
    length: 50,
    temperature: 0,
    stop: "\na",
    onText: (t) => streamed.push(t),
  });
  assert.equal(text, "bc!");
  assert.equal(streamed.join(""), text);
});

test("continue samples on from the kept state", async () => {
  const gen = new Generator(fakeBackend());
  const session = gen.session();
  await session.feed("a");
  const first = await session.sample({ length: 2, temperature: 0 });
  const more = await session.sample({ length: 3, temperature: 0 });
  assert.equal(first + more, "bc!\na");
  assert.equal(session.state.steps, 1 + 5);
});

test("unknown prompt characters are reported, or skipped when asked", async () => {
  const gen = new Generator(fakeBackend());
  await assert.rejects(gen.generate({ prompt: "aé", length: 1 }), /not in the model's vocabulary: "é"/);
  assert.deepEqual(gen.unknownChars("xaxy"), ["x", "y"]);
  assert.equal(await gen.generate({ prompt: "aé", length: 2, temperature: 0, unknown: "skip" }), "bc");
});

test("Stop ends a running generation early", async () => {
  const gen = new Generator(fakeBackend());
  const session = gen.session();
  let calls = 0;
  const text = await session.sample({ length: 100, temperature: 0, shouldStop: () => ++calls >= 4 });
  assert.equal(Array.from(text).length, 4);
});

test("bad options are rejected before any step", async () => {
  const log = [];
  const gen = new Generator(fakeBackend(log));
  await assert.rejects(gen.generate({ prompt: "a", length: 5, temperature: -1 }), /temperature/);
  await assert.rejects(gen.session().sample({ length: -2 }), /length/);
  assert.deepEqual(log, []);
});

test("sampled generation with a seed repeats", async () => {
  const gen = new Generator(fakeBackend());
  const opts = { prompt: "a", length: 40, temperature: 3, seed: 11 };
  assert.equal(await gen.generate(opts), await gen.generate(opts));
});
