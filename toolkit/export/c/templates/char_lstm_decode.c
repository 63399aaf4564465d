/* char_lstm_decode.c: greedy and sampled decoding over char_lstm_step's int8 logits, with an
 * optional pattern, in integer C (no floating point, no malloc, no C library). See
 * char_lstm_decode.h for the API and the rule. Part of char-lstm-toolkit. */
#include "char_lstm_decode.h"

#include <stddef.h>

/* ------------------------------------------------------------------ PCG32 */

uint32_t char_lstm_rng_u32(char_lstm_rng *rng) {
    const uint64_t old = rng->state;
    rng->state = old * 6364136223846793005ull + rng->inc;
    const uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    const uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((0u - rot) & 31u));
}

void char_lstm_rng_seed(char_lstm_rng *rng, uint64_t seed, uint64_t stream) {
    rng->state = 0u;
    rng->inc = (stream << 1u) | 1u;
    (void)char_lstm_rng_u32(rng);
    rng->state += seed;
    (void)char_lstm_rng_u32(rng);
}

/* ------------------------------------------------------------------ temperature */

/* round(2^30 * log2(e)), and round(2^30 * 2^(-2^j / 2^16)) for j = 0..15: 2^-x for a Q16 x is
 * the product of the constants of x's fraction bits, shifted right by its integer part. */
#define LOG2E_Q30 1549082005u
static const uint32_t EXP2_NEG_BIT_Q30[16] = {
    1073730468u, 1073719111u, 1073696399u, 1073650976u, 1073560135u, 1073378477u,
    1073015252u, 1072289173u, 1070838486u, 1067942999u, 1062175491u, 1050733751u,
    1028218693u, 984625594u,  902905651u,  759250125u,
};

/* round(2^16 * 2^(-x / 2^16)) */
static uint32_t exp2_neg_q16(uint32_t x) {
    uint32_t r = 1u << 30; /* Q30 */
    for (int j = 0; j < 16; j++)
        if ((x >> j) & 1u) r = (uint32_t)(((uint64_t)r * EXP2_NEG_BIT_Q30[j] + (1u << 29)) >> 30);
    const uint32_t n = 14u + (x >> 16); /* Q30 -> Q16, then the integer part */
    return n >= 32u ? 0u : (uint32_t)(((uint64_t)r + (1ull << (n - 1u))) >> n);
}

/* log2(e) * logit scale / temperature in Q16, from the header's integer form of the scale
 * (scale = M * 2^(SHIFT - 31)); capped where every weight but the best's is 0 anyway. */
static uint32_t beta_q16(int32_t temperature_milli) {
    const uint64_t lm = ((uint64_t)LOG2E_Q30 * (uint64_t)CHAR_LSTM_LOGITS_SCALE_MULTIPLIER) >> 16;
    const uint64_t q = lm * 1000u / (uint64_t)temperature_milli; /* beta = q * 2^(SHIFT - 29) */
    const int32_t shift = CHAR_LSTM_LOGITS_SCALE_SHIFT - 29;
    const uint64_t cap = 1u << 24;
    uint64_t beta = q;
    /* Shifts by a loop: the count is a constant of either sign, and runs once per init. */
    if (shift >= 0) {
        for (int32_t i = 0; i < shift && beta < cap; i++) beta <<= 1;
    } else {
        for (int32_t i = 1; i < -shift && beta; i++) beta >>= 1;
        beta = (beta >> 1) + (beta & 1u); /* the last bit rounds */
    }
    return (uint32_t)(beta < cap ? beta : cap);
}

int char_lstm_sampler_init(char_lstm_sampler *s, int32_t temperature_milli, int32_t top_k) {
    if (s == NULL || temperature_milli < 0 || top_k < 0) return -1;
    s->temperature_milli = temperature_milli;
    s->top_k = top_k;
    const uint32_t beta = temperature_milli > 0 ? beta_q16(temperature_milli) : 0u;
    for (uint32_t d = 0; d < 256u; d++)
        s->weight[d] = temperature_milli > 0 ? exp2_neg_q16(d * beta) : (d == 0u ? 65536u : 0u);
    return 0;
}

/* ------------------------------------------------------------------ choosing */

int32_t char_lstm_pattern_next(const char_lstm_pattern *p, int32_t state, int32_t token) {
    if (p == NULL || state < 0 || state >= p->states || token < 0 || token >= p->vocab) return -1;
    return p->next[(size_t)state * (size_t)p->vocab + (size_t)token];
}

int32_t char_lstm_choose(const char_lstm_sampler *s, const int8_t *logits,
                         const char_lstm_pattern *pattern, int32_t state, int32_t remaining,
                         char_lstm_rng *rng) {
    uint8_t allowed[CHAR_LSTM_VOCAB_SIZE];
    int accepting = 0;
    if (pattern != NULL) {
        if (state < 0 || state >= pattern->states || remaining <= 0) return CHAR_LSTM_END;
        const int16_t *row = pattern->next + (size_t)state * CHAR_LSTM_VOCAB_SIZE;
        int any = 0;
        for (int32_t v = 0; v < CHAR_LSTM_VOCAB_SIZE; v++) {
            allowed[v] = (uint8_t)(row[v] >= 0 && pattern->distance[row[v]] <= remaining - 1);
            any |= allowed[v];
        }
        if (!any) return CHAR_LSTM_END;
        accepting = pattern->accepting[state];
    } else {
        for (int32_t v = 0; v < CHAR_LSTM_VOCAB_SIZE; v++) allowed[v] = 1;
    }
    /* The candidates: the allowed characters, or all of them in an accepting state (where a
     * character that is not allowed stands for END). */
    int32_t best = -1;
    for (int32_t v = 0; v < CHAR_LSTM_VOCAB_SIZE; v++)
        if ((accepting || allowed[v]) && (best < 0 || logits[v] > logits[best])) best = v;
    int32_t chosen = best;
    if (s->temperature_milli > 0 && rng != NULL) {
        int32_t floor = -128; /* top-k: the k-th largest candidate logit */
        if (s->top_k > 0 && s->top_k < CHAR_LSTM_VOCAB_SIZE) {
            uint16_t count[256] = {0};
            for (int32_t v = 0; v < CHAR_LSTM_VOCAB_SIZE; v++)
                if (accepting || allowed[v]) count[logits[v] + 128]++;
            int32_t seen = 0;
            for (int32_t q = 127; q >= -128; q--) {
                seen += count[q + 128];
                if (seen >= s->top_k) {
                    floor = q;
                    break;
                }
            }
        }
        uint32_t total = 0;
        for (int32_t v = 0; v < CHAR_LSTM_VOCAB_SIZE; v++)
            if ((accepting || allowed[v]) && logits[v] >= floor)
                total += s->weight[logits[best] - logits[v]];
        /* r uniform in [0, total): the top 32 bits of a 32 x 32-bit product */
        uint32_t r = (uint32_t)(((uint64_t)char_lstm_rng_u32(rng) * total) >> 32);
        for (int32_t v = 0; v < CHAR_LSTM_VOCAB_SIZE; v++) {
            if (!(accepting || allowed[v]) || logits[v] < floor) continue;
            const uint32_t w = s->weight[logits[best] - logits[v]];
            if (r < w) {
                chosen = v;
                break;
            }
            r -= w;
        }
    }
    return allowed[chosen] ? chosen : CHAR_LSTM_END;
}

int32_t char_lstm_decode(char_lstm_state *state, const int8_t *logits, const char_lstm_sampler *s,
                         const char_lstm_pattern *pattern, char_lstm_rng *rng, int32_t length,
                         int32_t *out) {
    if (state == NULL || logits == NULL || s == NULL || length < 0 || (length > 0 && out == NULL))
        return -1;
    int32_t at = 0;
    if (pattern != NULL) {
        if (pattern->vocab != CHAR_LSTM_VOCAB_SIZE || pattern->start < 0 ||
            pattern->start >= pattern->states || pattern->distance[pattern->start] > length)
            return -1;
        at = pattern->start;
    }
    int32_t n = 0;
    while (n < length) {
        const int32_t token = char_lstm_choose(s, logits, pattern, at, length - n, rng);
        if (token == CHAR_LSTM_END) break;
        out[n++] = token;
        if (pattern != NULL) at = pattern->next[(size_t)at * CHAR_LSTM_VOCAB_SIZE + (size_t)token];
        if ((logits = char_lstm_step(state, token)) == NULL) return -1;
    }
    return n;
}
