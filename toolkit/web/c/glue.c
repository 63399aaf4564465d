/* The wasm face of char_lstm.c (char-lstm-toolkit): states in linear memory, one step per
 * call, the vocabulary and the logits' quantization for the page (web/src/char_lstm_wasm.js).
 * Built with clang --target=wasm32 -nostdlib by toolkit/web/wasm.py: no emscripten, no libc. */
#include <stddef.h>
#include <stdint.h>

#include "char_lstm.h"
#include "char_lstm_decode.h"

#define EXPORT(name) __attribute__((export_name(#name)))

extern unsigned char __heap_base;

/* States: a bump allocator over the heap with a free list (every block is one state, so a
 * freed block fits any later state exactly). */
#define STATE_BYTES ((sizeof(char_lstm_state) + 15u) & ~(size_t)15u)
static uintptr_t g_heap_top;
static void *g_free_list;

/* `bytes` (a multiple of 16) from the top of the heap, growing the memory; NULL if it cannot. */
static void *heap_take(uintptr_t bytes) {
    if (!g_heap_top) g_heap_top = ((uintptr_t)&__heap_base + 15u) & ~(uintptr_t)15u;
    const uintptr_t end = g_heap_top + bytes;
    const uintptr_t have = __builtin_wasm_memory_size(0) * 65536u;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535u) / 65536u) == (size_t)-1)
        return NULL;
    void *block = (void *)g_heap_top;
    g_heap_top = end;
    return block;
}

EXPORT(state_new) char_lstm_state *state_new(void) {
    char_lstm_state *s;
    if (g_free_list) {
        s = g_free_list;
        g_free_list = *(void **)g_free_list;
    } else if (!(s = heap_take(STATE_BYTES))) {
        return NULL;
    }
    char_lstm_reset(s);
    return s;
}

EXPORT(state_free) void state_free(char_lstm_state *s) {
    if (!s) return;
    *(void **)s = g_free_list;
    g_free_list = s;
}

EXPORT(state_copy) void state_copy(char_lstm_state *dst, const char_lstm_state *src) { *dst = *src; }
EXPORT(reset) void reset(char_lstm_state *s) { char_lstm_reset(s); }
/* The int8 logits (CHAR_LSTM_VOCAB_SIZE of them), or 0 for a token out of range. */
EXPORT(step) const int8_t *step(char_lstm_state *s, int32_t token) { return char_lstm_step(s, token); }

/* Greedy: feed tokens[0..n), then write `length` argmax tokens into out; returns how many. */
EXPORT(greedy) int32_t greedy(char_lstm_state *s, const int32_t *tokens, int32_t n, int32_t *out,
                              int32_t length) {
    const int8_t *logits = NULL;
    for (int32_t i = 0; i < n; i++)
        if (!(logits = char_lstm_step(s, tokens[i]))) return -1;
    if (!logits) return -1;
    for (int32_t i = 0; i < length; i++) {
        int32_t best = 0;
        for (int32_t k = 1; k < CHAR_LSTM_VOCAB_SIZE; k++)
            if (logits[k] > logits[best]) best = k;
        out[i] = best;
        if (i + 1 < length && !(logits = char_lstm_step(s, best))) return -1;
    }
    return length;
}

/* One pattern at a time for decode(): pattern_alloc sizes it, then the page writes the
 * toolkit's table ([states][vocab] int16 next states, -1 dead; int16 distances; uint8
 * accepting flags) at pattern_next / pattern_distance / pattern_accepting. */
static char_lstm_pattern g_pattern;
static unsigned char *g_pattern_block;
static uintptr_t g_pattern_bytes;

EXPORT(pattern_alloc) int32_t pattern_alloc(int32_t states, int32_t start) {
    if (states < 1 || states > 32767 || start < 0 || start >= states) return 0;
    const uintptr_t n = (uintptr_t)states;
    const uintptr_t bytes = (n * CHAR_LSTM_VOCAB_SIZE * 2u + n * 2u + n + 15u) & ~(uintptr_t)15u;
    if (bytes > g_pattern_bytes) { /* the old block is left behind: patterns rarely grow */
        unsigned char *block = heap_take(bytes);
        if (!block) return 0;
        g_pattern_block = block;
        g_pattern_bytes = bytes;
    }
    g_pattern.states = states;
    g_pattern.vocab = CHAR_LSTM_VOCAB_SIZE;
    g_pattern.start = start;
    g_pattern.next = (const int16_t *)g_pattern_block;
    g_pattern.distance = (const int16_t *)(g_pattern_block + n * CHAR_LSTM_VOCAB_SIZE * 2u);
    g_pattern.accepting = g_pattern_block + n * CHAR_LSTM_VOCAB_SIZE * 2u + n * 2u;
    return 1;
}
EXPORT(pattern_next) int16_t *pattern_next(void) { return (int16_t *)g_pattern.next; }
EXPORT(pattern_distance) int16_t *pattern_distance(void) { return (int16_t *)g_pattern.distance; }
EXPORT(pattern_accepting) uint8_t *pattern_accepting(void) { return (uint8_t *)g_pattern.accepting; }

/* The C decoder (char_lstm_decode.c): feed tokens[0..n) (none: go on from the state's last
 * logits), then up to `length` tokens into out, greedy (temperature 0) or sampled by the
 * integer sampler with PCG32 seeded by seed_hi:seed_lo; with_pattern: the pattern last
 * given to pattern_alloc. Returns how many tokens, or -1. The same tokens as the native C's
 * char_lstm_decode for the same options and seed. */
EXPORT(decode) int32_t decode(char_lstm_state *s, const int32_t *tokens, int32_t n, int32_t *out,
                              int32_t length, int32_t temperature_milli, int32_t top_k,
                              uint32_t seed_lo, uint32_t seed_hi, int32_t with_pattern) {
    const int8_t *logits = s->steps ? s->logits : NULL;
    for (int32_t i = 0; i < n; i++)
        if (!(logits = char_lstm_step(s, tokens[i]))) return -1;
    char_lstm_sampler sampler;
    char_lstm_rng rng;
    if (char_lstm_sampler_init(&sampler, temperature_milli, top_k) != 0) return -1;
    char_lstm_rng_seed(&rng, ((uint64_t)seed_hi << 32) | seed_lo, 0u);
    return char_lstm_decode(s, logits, &sampler, with_pattern && g_pattern.states ? &g_pattern : NULL,
                            &rng, length, out);
}

EXPORT(scratch) void *scratch(void) { /* room for greedy's token arrays */
    static int32_t buf[1 << 16];
    return buf;
}
EXPORT(scratch_words) int32_t scratch_words(void) { return 1 << 16; }
EXPORT(state_bytes) int32_t state_bytes(void) { return (int32_t)sizeof(char_lstm_state); }
EXPORT(vocab_size) int32_t vocab_size(void) { return CHAR_LSTM_VOCAB_SIZE; }
EXPORT(vocab_entry) const char *vocab_entry(int32_t i) {
    return i >= 0 && i < CHAR_LSTM_VOCAB_SIZE ? char_lstm_vocab[i] : NULL;
}
EXPORT(layers) int32_t layers(void) { return CHAR_LSTM_LAYERS; }
EXPORT(units) int32_t units(void) { return CHAR_LSTM_UNITS; }
EXPORT(logits_zero_point) int32_t logits_zero_point(void) { return CHAR_LSTM_LOGITS_ZERO_POINT; }
/* real logit = scale * (q - zero point), scale = M * 2^(SHIFT - 31): the header's integer
 * form, exact in a double (M has 31 bits). */
EXPORT(logits_scale) double logits_scale(void) {
    double scale = (double)CHAR_LSTM_LOGITS_SCALE_MULTIPLIER;
    for (int e = CHAR_LSTM_LOGITS_SCALE_SHIFT - 31; e < 0; e++) scale *= 0.5;
    for (int e = CHAR_LSTM_LOGITS_SCALE_SHIFT - 31; e > 0; e--) scale *= 2.0;
    return scale;
}
EXPORT(simd) int32_t simd(void) {
#if defined(__wasm_simd128__)
    return 1;
#else
    return 0;
#endif
}
