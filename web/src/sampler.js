// Turning logits into the next character, with the Python runtime's semantics
// (toolkit/runtime/sampling.py): temperature 0 is greedy (argmax, first of ties), top-k keeps
// ties at its border, top-p keeps the smallest set of most likely tokens whose mass reaches p,
// and one uniform draw per character picks from the cumulative distribution.
//
// Pure functions on typed arrays: no DOM, no onnxruntime, so node's test runner checks them.

export class SamplingError extends Error {}

export function checkSamplingArgs({ temperature = 1, topK = 0, topP = 1 } = {}) {
  if (!Number.isFinite(temperature) || temperature < 0) {
    throw new SamplingError(`temperature must be >= 0 (0 means greedy), got ${temperature}`);
  }
  if (!Number.isInteger(topK) || topK < 0) {
    throw new SamplingError(`top-k must be an integer >= 0 (0 means no limit), got ${topK}`);
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new SamplingError(`top-p must be in (0, 1], got ${topP}`);
  }
}

/** Index of the largest value; the first one on ties (like numpy's argmax). */
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

/** The distribution sampled from (Float64Array), for temperature > 0. */
export function nextTokenProbs(logits, { temperature = 1, topK = 0, topP = 1 } = {}) {
  const n = logits.length;
  const z = new Float64Array(n);
  for (let i = 0; i < n; i++) z[i] = logits[i] / temperature;
  if (topK > 0 && topK < n) {
    // The k-th largest value; every logit >= it is kept (ties at the border stay in).
    const kth = Float64Array.from(z).sort()[n - topK];
    for (let i = 0; i < n; i++) if (z[i] < kth) z[i] = -Infinity;
  }
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (z[i] > max) max = z[i];
  const probs = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    probs[i] = Math.exp(z[i] - max);
    sum += probs[i];
  }
  for (let i = 0; i < n; i++) probs[i] /= sum;
  if (topP < 1) {
    // Stable sort by descending probability; keep a token while the mass before it is < p.
    const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
    let before = 0;
    let kept = 0;
    const keep = new Uint8Array(n);
    for (const i of order) {
      if (before < topP) {
        keep[i] = 1;
        kept += probs[i];
      }
      before += probs[i];
    }
    for (let i = 0; i < n; i++) probs[i] = keep[i] ? probs[i] / kept : 0;
  }
  return probs;
}

/** One token id. `random` returns a uniform number in [0, 1); it is not called when greedy. */
export function sampleNext(logits, options = {}, random = Math.random) {
  const { temperature = 1 } = options;
  if (temperature === 0) return argmax(logits);
  const probs = nextTokenProbs(logits, options);
  const u = random();
  // Inverse CDF: the number of tokens whose cumulative mass stays below u * total.
  let total = 0;
  for (let i = 0; i < probs.length; i++) total += probs[i];
  let cdf = 0;
  let token = 0;
  for (let i = 0; i < probs.length; i++) {
    cdf += probs[i];
    if (cdf < u * total) token++;
  }
  return Math.min(token, probs.length - 1);
}

/** A small seeded generator (mulberry32) so that a page can repeat a sample. */
export function seededRandom(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * How many leading characters of `chars` (an array of characters) can be shown while
 * generation goes on: a tail that could still become the start of `stop` is held back, so
 * that what was streamed always equals the returned text (Session.sample's rule).
 */
export function safeLength(chars, stop) {
  const s = Array.from(stop ?? "");
  for (let keep = Math.min(s.length - 1, chars.length); keep > 0; keep--) {
    if (endsWith(chars, s.slice(0, keep))) return chars.length - keep;
  }
  return chars.length;
}

/** Whether the array of characters `chars` ends with the array `tail`. */
export function endsWith(chars, tail) {
  if (tail.length === 0 || tail.length > chars.length) return false;
  const offset = chars.length - tail.length;
  return tail.every((ch, i) => chars[offset + i] === ch);
}
