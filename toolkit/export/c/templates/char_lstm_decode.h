/* char_lstm_decode.h: choosing characters from char_lstm_step's int8 logits, in integer C --
 * greedy or sampled (temperature, top-k, a seeded PCG32), optionally constrained to a pattern.
 *
 * Part of char-lstm-toolkit; the same file for every model (it reads char_lstm.h). A pattern
 * is plain data written by the toolkit (char_lstm_pattern.c/h: `toolkit firmware --regex`,
 * or toolkit.runtime.backends.c_decode.pattern_sources), so one model serves many patterns.
 *
 *   char_lstm_sampler s;  char_lstm_rng rng;
 *   char_lstm_sampler_init(&s, 800, 0);            // temperature 0.8 (thousandths; 0 = greedy),
 *                                                  // top-k 0 (all)
 *   char_lstm_rng_seed(&rng, seed, 0);
 *   n = char_lstm_decode(&state, logits, &s, &char_lstm_pattern_table, &rng, length, out);
 *
 * The rule (the toolkit's Python decoder applies the same one): at each step only characters
 * whose next pattern state can still reach acceptance within the characters left may be
 * drawn. In a state that is not accepting the distribution is renormalised over them (after
 * temperature, before top-k) and greedy takes the best of them. In an accepting state the
 * draw is from the whole distribution and a character that is not allowed means END (so
 * ending gets the mass of every character that cannot continue the match); greedy ends when
 * the overall best is not allowed. Where no character is allowed, it ends. No floating point:
 * temperature is a table of fixed-point weights 2^16 * exp(-(best - q) * scale / T) over the
 * int8 logit differences, computed in integers by char_lstm_sampler_init.
 */
#ifndef CHAR_LSTM_DECODE_H
#define CHAR_LSTM_DECODE_H

#include <stdint.h>

#include "char_lstm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CHAR_LSTM_END (-1) /* char_lstm_choose: the text ends here */

typedef struct {
    int32_t states;           /* number of states */
    int32_t vocab;            /* must be CHAR_LSTM_VOCAB_SIZE */
    int32_t start;            /* the start state */
    const int16_t *next;      /* [states][vocab] next state, -1 = dead */
    const uint8_t *accepting; /* [states] 1 where the text so far is a full match */
    const int16_t *distance;  /* [states] fewest characters from there to a full match */
} char_lstm_pattern;

typedef struct { /* PCG32 (O'Neill, pcg32_random_r): 64-bit state, 32-bit outputs */
    uint64_t state, inc;
} char_lstm_rng;

typedef struct {
    int32_t temperature_milli; /* 0: greedy */
    int32_t top_k;             /* keep the k largest logits (ties at the border kept); 0: all */
    uint32_t weight[256];      /* weight[d]: 2^16 * exp(-d * logit scale / temperature) */
} char_lstm_sampler;

void char_lstm_rng_seed(char_lstm_rng *rng, uint64_t seed, uint64_t stream);
uint32_t char_lstm_rng_u32(char_lstm_rng *rng);

/* 0, or -1 for a negative temperature or top-k. */
int char_lstm_sampler_init(char_lstm_sampler *s, int32_t temperature_milli, int32_t top_k);

/* The next pattern state after `token` (-1: dead). */
int32_t char_lstm_pattern_next(const char_lstm_pattern *p, int32_t state, int32_t token);

/* The next token for these logits, or CHAR_LSTM_END. pattern NULL: unconstrained (never
 * END). `remaining`: characters left including this one. */
int32_t char_lstm_choose(const char_lstm_sampler *s, const int8_t *logits,
                         const char_lstm_pattern *pattern, int32_t state, int32_t remaining,
                         char_lstm_rng *rng);

/* Up to `length` tokens into out, each fed to the state (so it can go on later), starting
 * from `logits` (the last char_lstm_step's). Returns how many; fewer than length where the
 * pattern's match ended. -1 (nothing done): no logits, a pattern of another vocabulary, or
 * one that needs more than `length` characters. */
int32_t char_lstm_decode(char_lstm_state *state, const int8_t *logits, const char_lstm_sampler *s,
                         const char_lstm_pattern *pattern, char_lstm_rng *rng, int32_t length,
                         int32_t *out);

#ifdef __cplusplus
}
#endif

#endif /* CHAR_LSTM_DECODE_H */
