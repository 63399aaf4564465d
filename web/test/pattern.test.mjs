// pattern.js: the automaton accepts exactly what the regex matches in full (JavaScript's own
// RegExp as the reference, over a small alphabet), the distance to acceptance is the shortest
// match, unsupported syntax is refused in one line, and constrained sampling always writes a
// full match within the length.
import assert from "node:assert/strict";
import { test } from "node:test";

import { RegExpParser } from "@eslint-community/regexpp";
import { Generator, constrainedNext } from "../src/generator.js";
import { PatternError, compileRegex } from "../src/pattern.js";
import { seededRandom } from "../src/sampler.js";

const parser = new RegExpParser();
const VOCAB = ["\n", " ", "a", "b", "c", "A", "1"];

function* strings(alphabet, maxLength) {
  yield "";
  let level = [""];
  for (let n = 1; n <= maxLength; n++) {
    level = level.flatMap((s) => alphabet.map((ch) => s + ch));
    yield* level;
  }
}

function accepts(pattern, text) {
  let state = 0;
  for (const ch of text) {
    state = pattern.next(state, VOCAB.indexOf(ch));
    if (state < 0) return false;
  }
  return Boolean(pattern.accepting[state]);
}

const PATTERNS = ["a*b", "(a|bc)+", "[a-c]{1,3}", "[^a\\n]?b", "a.b", "\\w\\s\\d", "(?:ab|a)*c?", "A[a-c]{0,2}\\n", "(a|b){2}c*", "x|a"];

test("the automaton accepts what the regex matches in full", () => {
  for (const source of PATTERNS) {
    const pattern = compileRegex(source, VOCAB, parser);
    const reference = new RegExp(`^(?:${source})$`);
    let shortest = Infinity;
    for (const text of strings(VOCAB, 4)) {
      const want = reference.test(text);
      assert.equal(accepts(pattern, text), want, `${source} on ${JSON.stringify(text)}`);
      if (want) shortest = Math.min(shortest, text.length);
    }
    assert.equal(pattern.distance[0], shortest, source);
  }
});

test("unsupported, impossible and oversized patterns are refused in one line", () => {
  const refused = {
    "a(?=b)": /lookaround/,
    "(a)\\1": /back-references/,
    "^ab$": /anchors are implied/,
    "zz": /no text made of the model's characters/,
    "a(b": /not a valid pattern/,
    "[ab]{0,15}[ab]{0,15}a[ab]{14}": /over 200 states/,
  };
  for (const [source, message] of Object.entries(refused)) {
    assert.throws(() => compileRegex(source, VOCAB, parser, { maxStates: 200 }), (err) => {
      assert.ok(err instanceof PatternError, source);
      assert.match(err.message, message);
      assert.ok(!err.message.includes("\n"));
      return true;
    });
  }
  assert.throws(() => compileRegex("a{5}", VOCAB, parser).checkLength(4), /has 5 characters/);
});

test("constrained sampling writes a full match within the length", async () => {
  // A model that always prefers "\n": it can only end a match, never continue one.
  const backend = {
    vocab: VOCAB,
    zeroState: () => null,
    step: async () => ({ logits: Float32Array.of(5, 0, 1, 1, 1, 1, 1), state: null }),
  };
  const generator = new Generator(backend);
  const random = seededRandom(7);
  for (const source of ["a[bc]{2,6}", "(ab|c)+", "[a-c ]{0,8}"]) {
    const pattern = compileRegex(source, VOCAB, parser);
    const reference = new RegExp(`^(?:${source})$`);
    for (const temperature of [0, 1]) {
      for (let n = 0; n < 40; n++) {
        const session = generator.session();
        const text = await session.sample({ length: 7, temperature, pattern, random });
        assert.ok(reference.test(text) && text.length <= 7, `${source}: ${JSON.stringify(text)}`);
      }
    }
  }
  // In an accepting state the end is drawn with the mass outside the allowed set: "\n" here.
  const pattern = compileRegex("a*", VOCAB, parser);
  const logits = Float32Array.of(5, 0, 1, 1, 1, 1, 1);
  assert.equal(constrainedNext(logits, pattern, 0, 5, { temperature: 0 }, random), -1);
  assert.equal(constrainedNext(Float32Array.of(0, 0, 5, 1, 1, 1, 1), pattern, 0, 5, { temperature: 0 }, random), 2);
});
