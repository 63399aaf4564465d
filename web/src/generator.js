// Text generation on any step backend, with the Python runtime's semantics
// (toolkit/runtime/generator.py): warm the state with the prompt, then sample one character
// at a time, carrying h/c. A Session keeps its state, so generation can be continued.
//
// A backend is { vocab, zeroState(), async step(token, state) -> { logits, state } }: the
// state is opaque here (onnxruntime tensors in the page, arrays in the tests).

import { argmax, checkSamplingArgs, endsWith, safeLength, sampleNext, seededRandom } from "./sampler.js";

// Fed when the prompt is empty: text starts after a line break, so the model begins a line.
const START_CANDIDATES = ["\n", " "];

export class GenerationError extends Error {}

export class Generator {
  constructor(backend) {
    this.backend = backend;
    this.chars = Array.from(backend.vocab);
    this.index = new Map(this.chars.map((ch, i) => [ch, i]));
    this.startText = START_CANDIDATES.find((ch) => this.index.has(ch)) ?? this.chars[0];
  }

  /** Characters of `text` that the model does not know, in order of first appearance. */
  unknownChars(text) {
    return [...new Set(Array.from(text).filter((ch) => !this.index.has(ch)))];
  }

  /** Token ids; unknown characters are an error, or dropped with unknown = "skip". */
  encode(text, unknown = "error") {
    if (unknown !== "error" && unknown !== "skip") {
      throw new GenerationError(`unknown must be "error" or "skip", got ${unknown}`);
    }
    const missing = this.unknownChars(text);
    if (missing.length && unknown === "error") {
      const shown = missing.slice(0, 20).map((ch) => JSON.stringify(ch)).join(", ");
      throw new GenerationError(
        `prompt has characters not in the model's vocabulary: ${shown} (use unknown: "skip" to drop them)`,
      );
    }
    return Array.from(text)
      .filter((ch) => this.index.has(ch))
      .map((ch) => this.index.get(ch));
  }

  session() {
    return new Session(this);
  }

  /**
   * Warm a fresh state with `prompt`, then sample `length` characters. Resolves to the text
   * without the prompt. `seed` makes sampling repeatable in this page (it does not match
   * numpy's generator); greedy (temperature 0) needs none.
   */
  async generate({ prompt = "", unknown = "error", ...options } = {}) {
    checkSamplingArgs(options);
    const session = this.session();
    await session.feed(prompt || this.startText, unknown);
    return session.sample(options);
  }
}

/**
 * The next token under a pattern, or -1 to end the match. In a state that is not accepting,
 * the distribution is renormalised over the allowed characters (masked before temperature's
 * softmax, so before top-k/top-p); in an accepting state, ending is one more choice: a draw
 * from the whole distribution that falls outside the allowed characters ends the match.
 */
export function constrainedNext(logits, pattern, state, remaining, options, draw) {
  const allowed = pattern.allowed(state, remaining);
  if (!allowed.includes(1)) return -1;
  if (pattern.accepting[state]) {
    const token = sampleNext(logits, options, draw);
    return allowed[token] ? token : -1;
  }
  const masked = Float64Array.from(logits, (x, i) => (allowed[i] ? x : -Infinity));
  const token = sampleNext(masked, options, draw);
  return allowed[token] ? token : argmax(masked); // a draw of exactly 0 lands on token 0
}

export class Session {
  constructor(generator) {
    this.generator = generator;
    this.state = generator.backend.zeroState();
    this.logits = null;
    this.steps = 0;
    // onStep(token, logits): called as each token is read, with the logits that predicted it
    // (null for the first); the page's surprisal view listens here.
    this.onStep = null;
  }

  async step(token) {
    this.onStep?.(token, this.logits);
    const out = await this.generator.backend.step(token, this.state);
    this.logits = out.logits;
    this.state = out.state;
    this.steps += 1;
  }

  /** Run text through the model, updating the state. */
  async feed(text, unknown = "error") {
    for (const token of this.generator.encode(text, unknown)) await this.step(token);
  }

  /**
   * Sample up to `length` characters from the kept state. `onText(chars)` streams them (a
   * tail that could still turn into `stop` is held back); `shouldStop()` ends early (the
   * Stop button); `pause()` is awaited every `pauseEvery` characters so a page can paint.
   * `pattern` (pattern.js): the text is a full match of it, complete within `length`.
   */
  async sample({
    length = 200,
    temperature = 1,
    topK = 0,
    topP = 1,
    stop = null,
    pattern = null,
    seed = null,
    random = null,
    onText = null,
    shouldStop = null,
    pause = null,
    pauseEvery = 8,
  } = {}) {
    if (!Number.isInteger(length) || length < 0) {
      throw new GenerationError(`length must be an integer >= 0, got ${length}`);
    }
    checkSamplingArgs({ temperature, topK, topP });
    const draw = random ?? (seed === null || seed === undefined ? Math.random : seededRandom(seed));
    if (this.logits === null) await this.feed(this.generator.startText);
    pattern?.checkLength(length);
    let matched = 0; // the pattern's state
    const stopChars = Array.from(stop ?? "");
    const chars = this.generator.chars;
    const out = [];
    let streamed = 0;
    let done = false;
    for (let i = 0; i < length; i++) {
      let token;
      if (pattern) {
        token = constrainedNext(this.logits, pattern, matched, length - i, { temperature, topK, topP }, draw);
        if (token < 0) break; // the match ends here
        matched = pattern.next(matched, token);
      } else {
        token = sampleNext(this.logits, { temperature, topK, topP }, draw);
      }
      out.push(chars[token]);
      if (stopChars.length && endsWith(out, stopChars)) {
        out.length -= stopChars.length;
        done = true;
      }
      if (onText) {
        const safe = done ? out.length : safeLength(out, stop);
        if (safe > streamed) {
          onText(out.slice(streamed, safe).join(""));
          streamed = safe;
        }
      }
      if (done) break;
      await this.step(token);
      if (shouldStop?.()) break;
      if (pause && (i + 1) % pauseEvery === 0) await pause();
    }
    if (onText && out.length > streamed) onText(out.slice(streamed).join(""));
    return out.join("");
  }
}
