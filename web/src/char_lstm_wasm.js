// The C engine: an exported model's char_lstm.c compiled to WebAssembly (toolkit/web/wasm.py,
// exports in toolkit/web/c/glue.c). Load the module, step it, decode greedily. The same file
// runs in the page and in node (no DOM, no onnxruntime).
//
//   const model = await loadCharLstm(bytesOrResponseOrUrl);
//   const state = model.newState();           // the zero state (h = c = 0), in wasm memory
//   const logits = model.step(state, token);  // Int8Array view of the int8 logits (the next
//                                             // step overwrites it: copy to keep)
//   model.greedy("ROMEO:", 200)               // text after the prompt, argmax of int8 logits
//   model.backend()                           // { vocab, zeroState, step } for generator.js

export class CharLstmError extends Error {}

const utf8 = new TextDecoder("utf-8", { fatal: true });
// Fed when the prompt is empty, as generator.js and the Python runtime do.
const START_CANDIDATES = ["\n", " "];

async function instantiate(source, imports) {
  if (source instanceof WebAssembly.Module) return WebAssembly.instantiate(source, imports);
  if (typeof Response !== "undefined" && source instanceof Response) {
    if (WebAssembly.instantiateStreaming && source.headers.get("Content-Type") === "application/wasm") {
      return (await WebAssembly.instantiateStreaming(source, imports)).instance;
    }
    source = await source.arrayBuffer();
  } else if (typeof source === "string" || source instanceof URL) {
    return instantiate(await fetch(source), imports);
  }
  return (await WebAssembly.instantiate(source, imports)).instance;
}

export async function loadCharLstm(source) {
  let instance;
  try {
    instance = await instantiate(source, {});
  } catch (err) {
    throw new CharLstmError(`cannot load the char_lstm wasm module: ${err.message ?? err}`);
  }
  return new CharLstm(instance);
}

export class CharLstm {
  constructor(instance) {
    const x = instance.exports;
    for (const name of ["memory", "state_new", "state_free", "step", "greedy", "vocab_size", "vocab_entry"]) {
      if (!(name in x)) throw new CharLstmError(`not a char_lstm wasm module: no export ${name}`);
    }
    this.exports = x;
    this.vocabSize = x.vocab_size();
    this.layers = x.layers();
    this.units = x.units();
    this.zeroPoint = x.logits_zero_point();
    this.scale = x.logits_scale();
    this.simd = Boolean(x.simd());
    this.stateBytes = x.state_bytes();
    this.vocab = [];
    for (let i = 0; i < this.vocabSize; i++) this.vocab.push(this.#cString(x.vocab_entry(i)));
    this.index = new Map(this.vocab.map((ch, i) => [ch, i]));
    // States are freed when their JS handle is collected (or with freeState).
    this.registry = new FinalizationRegistry((ptr) => x.state_free(ptr));
  }

  #bytes() {
    return new Uint8Array(this.exports.memory.buffer); // re-read: memory.grow detaches it
  }

  #cString(ptr) {
    const mem = this.#bytes();
    let end = ptr;
    while (mem[end] !== 0) end++;
    return utf8.decode(mem.subarray(ptr, end));
  }

  /** A fresh zero state: { ptr }. */
  newState() {
    const ptr = this.exports.state_new();
    if (!ptr) throw new CharLstmError("out of wasm memory for a new state");
    const state = { ptr };
    this.registry.register(state, ptr, state);
    return state;
  }

  freeState(state) {
    if (!state.ptr) return;
    this.registry.unregister(state);
    this.exports.state_free(state.ptr);
    state.ptr = 0;
  }

  copyState(state) {
    const copy = this.newState();
    this.exports.state_copy(copy.ptr, state.ptr);
    return copy;
  }

  reset(state) {
    this.exports.reset(state.ptr);
  }

  /** One step in place; the int8 logits as a view into wasm memory. */
  step(state, token) {
    const ptr = this.exports.step(state.ptr, token);
    if (!ptr) throw new CharLstmError(`token ${token} is out of range 0..${this.vocabSize - 1}`);
    return new Int8Array(this.exports.memory.buffer, ptr, this.vocabSize);
  }

  /** real = scale * (q - zero point), as a Float32Array. */
  dequantize(q) {
    const out = new Float32Array(q.length);
    for (let i = 0; i < q.length; i++) out[i] = this.scale * (q[i] - this.zeroPoint);
    return out;
  }

  /** Token ids of `text` (longest vocabulary match first); unknown characters throw. */
  encode(text) {
    const ids = [];
    for (const ch of Array.from(text)) {
      const id = this.index.get(ch);
      if (id === undefined) throw new CharLstmError(`${JSON.stringify(ch)} is not in the model's vocabulary`);
      ids.push(id);
    }
    return ids;
  }

  /** Greedy text after `prompt` (the whole loop in wasm): argmax of the int8 logits. */
  greedy(prompt, length) {
    const x = this.exports;
    const start = START_CANDIDATES.find((ch) => this.index.has(ch)) ?? this.vocab[0];
    const tokens = this.encode(prompt || start);
    if (tokens.length + length > x.scratch_words()) throw new CharLstmError("prompt + length too long");
    const state = this.newState();
    try {
      const buf = x.scratch();
      new Int32Array(x.memory.buffer, buf, tokens.length).set(tokens);
      const out = buf + 4 * tokens.length;
      const n = x.greedy(state.ptr, buf, tokens.length, out, length);
      if (n < 0) throw new CharLstmError("a token was out of range");
      return Array.from(new Int32Array(x.memory.buffer, out, n), (t) => this.vocab[t]).join("");
    } finally {
      this.freeState(state);
    }
  }

  /** The step as a generator.js backend: float logits (dequantized), the state in place. */
  backend() {
    return {
      vocab: this.vocab,
      zeroState: () => this.newState(),
      step: async (token, state) => ({ logits: this.dequantize(this.step(state, token)), state }),
    };
  }
}
