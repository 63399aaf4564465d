// Patterns: a regular expression the generated text must match in full, compiled to a
// deterministic automaton over the model's characters, with the decoding rule of
// toolkit/runtime/pattern.py: at each step only characters that keep the text inside the
// language, with the match still completable in the characters left, may be drawn.
//
//   const pattern = compileRegex("R[^\n]{5,40}\nO[^\n]{5,40}", vocab, parser);
//   pattern.allowed(state, remaining)   // Uint8Array [vocab]: 1 = may be drawn
//   pattern.next(state, token)          // the next state (-1: out of the language)
//
// `parser` is regexpp's RegExpParser (ESLint's maintained parser, copied into the site as
// regexpp.mjs): it parses; this file builds the automaton (Thompson's construction, then
// subsets). Supported: literals, classes, ., \d \w \s, alternation, groups, ? * + {m,n};
// anchors are implied. No DOM: node's test runner checks it.

export class PatternError extends Error {}

export const MAX_STATES = 10_000;
export const MAX_COMPILE_MS = 2_000;

const WORD = /\w/;
const SPACE = /\s/;
const DIGIT = /\d/;

/** A Uint8Array mask over the vocabulary: 1 where `test(char)`. */
function maskOf(chars, test) {
  return Uint8Array.from(chars, (ch) => (test(ch) ? 1 : 0));
}

function invert(mask) {
  return mask.map((bit) => 1 - bit);
}

function escapeSet(node) {
  switch (node.kind) {
    case "any":
      return (ch) => ch !== "\n"; // Python's `.`: any character but a line break
    case "digit":
      return (ch) => DIGIT.test(ch) !== node.negate;
    case "word":
      return (ch) => WORD.test(ch) !== node.negate;
    case "space":
      return (ch) => SPACE.test(ch) !== node.negate;
    default:
      throw new PatternError(`${node.raw} (a Unicode property) is not supported in a pattern`);
  }
}

/** The characters of the vocabulary one class, set or character node stands for. */
function charMask(node, chars) {
  switch (node.type) {
    case "Character":
      return maskOf(chars, (ch) => ch === String.fromCharCode(node.value));
    case "CharacterSet":
      return maskOf(chars, escapeSet(node));
    case "CharacterClassRange":
      return maskOf(chars, (ch) => ch.length === 1 && ch.charCodeAt(0) >= node.min.value && ch.charCodeAt(0) <= node.max.value);
    case "CharacterClass": {
      const mask = new Uint8Array(chars.length);
      for (const element of node.elements) {
        const m = charMask(element, chars);
        for (let i = 0; i < mask.length; i++) mask[i] |= m[i];
      }
      return node.negate ? invert(mask) : mask;
    }
    default:
      throw new PatternError(`${node.raw} is not supported in a character class`);
  }
}

/** A nondeterministic automaton: per state, epsilon moves and [mask, to] moves. */
class Nfa {
  constructor(chars) {
    this.chars = chars;
    this.eps = [];
    this.moves = [];
  }

  state() {
    this.eps.push([]);
    this.moves.push([]);
    if (this.eps.length > 50 * MAX_STATES) throw new PatternError(`the pattern is too large (over ${MAX_STATES} states)`);
    return this.eps.length - 1;
  }

  /** A fragment [start, end] for a node (Thompson's construction). */
  build(node) {
    switch (node.type) {
      case "Pattern":
      case "Group":
      case "CapturingGroup":
        return this.alternatives(node.alternatives);
      case "Alternative":
        return this.sequence(node.elements);
      case "Character":
      case "CharacterSet":
      case "CharacterClass": {
        const [start, end] = [this.state(), this.state()];
        this.moves[start].push([charMask(node, this.chars), end]);
        return [start, end];
      }
      case "Quantifier":
        return this.repeat(node);
      case "Assertion":
        throw new PatternError(
          node.kind === "start" || node.kind === "end"
            ? `${node.raw}: anchors are implied (the whole text must match), leave them out`
            : `${node.raw}: lookaround and word boundaries are not supported in a pattern`,
        );
      case "Backreference":
        throw new PatternError(`${node.raw}: back-references are not supported in a pattern`);
      default:
        throw new PatternError(`${node.raw} is not supported in a pattern`);
    }
  }

  alternatives(list) {
    if (list.length === 1) return this.build(list[0]);
    const [start, end] = [this.state(), this.state()];
    for (const alternative of list) {
      const [s, e] = this.build(alternative);
      this.eps[start].push(s);
      this.eps[e].push(end);
    }
    return [start, end];
  }

  sequence(elements) {
    const start = this.state();
    let end = start;
    for (const element of elements) {
      const [s, e] = this.build(element);
      this.eps[end].push(s);
      end = e;
    }
    return [start, end];
  }

  repeat(node) {
    const start = this.state();
    let end = start;
    for (let i = 0; i < node.min; i++) {
      const [s, e] = this.build(node.element);
      this.eps[end].push(s);
      end = e;
    }
    if (node.max === Infinity) {
      const [s, e] = this.build(node.element);
      this.eps[end].push(s);
      this.eps[e].push(s);
      const out = this.state();
      this.eps[end].push(out);
      this.eps[e].push(out);
      return [start, out];
    }
    const out = this.state();
    for (let i = node.min; i < node.max; i++) {
      this.eps[end].push(out); // stop here
      const [s, e] = this.build(node.element);
      this.eps[end].push(s);
      end = e;
    }
    this.eps[end].push(out);
    return [start, out];
  }

  closure(states) {
    const seen = new Set(states);
    const stack = [...states];
    while (stack.length) {
      for (const next of this.eps[stack.pop()]) {
        if (!seen.has(next)) {
          seen.add(next);
          stack.push(next);
        }
      }
    }
    return [...seen].sort((a, b) => a - b);
  }
}

/** A compiled pattern: transition table [states, vocab] (-1 dead), accepting flags, and per
 * state the fewest characters to acceptance. State 0 is the start. */
export class Pattern {
  constructor(source, vocabSize, table, accepting, distance) {
    Object.assign(this, { source, vocabSize, table, accepting, distance });
    this.states = accepting.length;
  }

  next(state, token) {
    return this.table[state * this.vocabSize + token];
  }

  /** Characters whose next state can still reach acceptance within remaining - 1 more. */
  allowed(state, remaining) {
    const out = new Uint8Array(this.vocabSize);
    for (let c = 0; c < this.vocabSize; c++) {
      const next = this.table[state * this.vocabSize + c];
      out[c] = next >= 0 && this.distance[next] <= remaining - 1 ? 1 : 0;
    }
    return out;
  }

  checkLength(length) {
    if (this.distance[0] > length) {
      throw new PatternError(
        `the shortest text matching the pattern has ${this.distance[0]} characters, more than the length (${length})`,
      );
    }
  }
}

/** Compile `source` (a regular expression, matched in full) over the vocabulary `chars`. */
export function compileRegex(source, chars, parser, { maxStates = MAX_STATES, maxMs = MAX_COMPILE_MS } = {}) {
  let ast;
  try {
    ast = parser.parsePattern(source, 0, source.length, { unicode: false });
  } catch (err) {
    throw new PatternError(`not a valid pattern: ${err.message.replace(/^Invalid regular expression: /, "")}`);
  }
  const nfa = new Nfa(chars);
  const [start, accept] = nfa.build(ast);
  // Subset construction: each automaton state is the set of NFA states the text can be in.
  const began = Date.now();
  const V = chars.length;
  const sets = [nfa.closure([start])];
  const index = new Map([[sets[0].join(","), 0]]);
  const rows = [];
  for (let s = 0; s < sets.length; s++) {
    if (Date.now() - began > maxMs) throw new PatternError(`the pattern took over ${maxMs / 1000} s to compile`);
    const row = new Int32Array(V).fill(-1);
    for (let c = 0; c < V; c++) {
      const targets = [];
      for (const q of sets[s]) for (const [mask, to] of nfa.moves[q]) if (mask[c]) targets.push(to);
      if (!targets.length) continue;
      const set = nfa.closure(targets);
      const key = set.join(",");
      let id = index.get(key);
      if (id === undefined) {
        id = sets.length;
        if (id >= maxStates) throw new PatternError(`the pattern needs over ${maxStates} states: make it smaller`);
        sets.push(set);
        index.set(key, id);
      }
      row[c] = id;
    }
    rows.push(row);
  }
  const n = sets.length;
  const accepting = Uint8Array.from(sets, (set) => (set.includes(accept) ? 1 : 0));
  // Fewest characters to acceptance: breadth first, backwards from the accepting states.
  const into = Array.from({ length: n }, () => []);
  rows.forEach((row, s) => row.forEach((t) => t >= 0 && into[t].push(s)));
  const distance = new Int32Array(n).fill(0x7fffffff);
  const queue = [];
  for (let s = 0; s < n; s++) if (accepting[s]) (distance[s] = 0), queue.push(s);
  for (let head = 0; head < queue.length; head++) {
    for (const p of into[queue[head]]) {
      if (distance[p] > distance[queue[head]] + 1) {
        distance[p] = distance[queue[head]] + 1;
        queue.push(p);
      }
    }
  }
  if (distance[0] === 0x7fffffff) {
    throw new PatternError("no text made of the model's characters matches the pattern");
  }
  // States that cannot reach acceptance are dead: moves into them become -1.
  const table = new Int32Array(n * V);
  rows.forEach((row, s) => row.forEach((t, c) => (table[s * V + c] = t >= 0 && distance[t] !== 0x7fffffff ? t : -1)));
  return new Pattern(source, V, table, accepting, distance);
}
