// What the model expected: for each character it read, its surprisal -log2 p under the
// distribution the model gave just before (temperature 1, from the step's own logits), and
// the five characters it found most likely there. Pure functions and one record class: no
// DOM, so node's test runner checks them.

export const TOP = 5;

/** log2 of softmax(logits), in float64. */
export function log2Softmax(logits) {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = (logits[i] - lse) / Math.LN2;
  return out;
}

/** Indices of the k largest values, largest first (the lower index first on ties). */
export function topK(values, k = TOP) {
  return Array.from(values.keys())
    .sort((a, b) => values[b] - values[a] || a - b)
    .slice(0, k);
}

/**
 * The characters a session read, each with its surprisal in bits (null for the first one:
 * nothing predicted it) and the top-5 alternatives [[char, probability], ...].
 */
export class SurprisalRecord {
  constructor(vocab) {
    this.vocab = vocab;
    this.chars = [];
    this.bits = [];
    this.top = [];
    this.sum = 0;
    this.scored = 0;
  }

  get length() {
    return this.chars.length;
  }

  /** `token` was read after the model gave `logits` (null before the first character). */
  add(token, logits) {
    this.chars.push(this.vocab[token]);
    if (logits === null) {
      this.bits.push(null);
      this.top.push([]);
      return;
    }
    const log2p = log2Softmax(logits);
    const bits = -log2p[token];
    this.bits.push(bits);
    this.top.push(topK(log2p).map((i) => [this.vocab[i], 2 ** log2p[i]]));
    this.sum += bits;
    this.scored += 1;
  }

  /** Drop everything from index `n` on. */
  truncate(n) {
    for (let i = n; i < this.bits.length; i++) {
      if (this.bits[i] !== null) {
        this.sum -= this.bits[i];
        this.scored -= 1;
      }
    }
    this.chars.length = this.bits.length = this.top.length = Math.min(n, this.chars.length);
  }

  /** Mean surprisal of the scored characters, in bits per character (NaN if none). */
  bitsPerChar() {
    return this.scored ? this.sum / this.scored : NaN;
  }

  text() {
    return this.chars.join("");
  }
}
