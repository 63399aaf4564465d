/* char-lstm-toolkit firmware: reset the state, feed the prompt, greedy-decode FW_LENGTH
 * characters (argmax of the int8 logits) -- or, built with FW_DECODE, let char_lstm_decode.c
 * choose them (a pattern, the integer sampler) -- print them as UTF-8 through semihosting,
 * and report SysTick ticks per step on the emulator's stderr. Under qemu -icount shift=0 one instruction
 * is one ns of virtual time, so a tick of the 25 MHz SysTick is 40 instructions; a loop of
 * known length calibrates that in every run. */
#include <stddef.h>
#include <stdint.h>

#include "char_lstm.h"
#include "firmware_config.h" /* FW_PROMPT_TOKENS, FW_PROMPT_STEPS, FW_LENGTH, FW_CALIB_LOOPS */
#include "semihost.h"
#ifdef FW_DECODE /* FW_TEMPERATURE_MILLI, FW_TOP_K, FW_SEED, FW_PATTERN */
#include "char_lstm_decode.h"
static char_lstm_sampler g_sampler;
static char_lstm_rng g_rng;
#endif

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_MASK 0xFFFFFFu /* the counter is 24 bits and counts down */

uint32_t stack_high_water(void);

static char_lstm_state g_state; /* all the RAM the model needs */
static int32_t g_out, g_err;

/* Ticks since `start`; one step is far shorter than a wrap (2^24 ticks, 671M instructions). */
static uint32_t ticks_since(uint32_t start) { return (start - SYST_CVR) & SYST_MASK; }

/* 2 instructions per pass (subs, bne): FW_CALIB_LOOPS passes = 2 * FW_CALIB_LOOPS. */
static void __attribute__((noinline)) calib_loop(uint32_t n) {
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+l"(n) : : "cc");
}

static uint32_t str_len(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}

static void put_u64(int32_t fd, uint64_t v) {
    char buf[24];
    int i = 23;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    sh_puts(fd, buf + i);
}

static void stat(const char *key, uint64_t v) {
    sh_puts(g_err, " ");
    sh_puts(g_err, key);
    sh_puts(g_err, "=");
    put_u64(g_err, v);
}

#ifndef FW_DECODE
static int32_t argmax(const int8_t *logits) {
    int32_t best = 0;
    for (int32_t i = 1; i < CHAR_LSTM_VOCAB_SIZE; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}
#endif

/* FNV-1a over every step's logits: two builds that print the same value computed the same
 * bits (the DSP and the portable matrix product are checked this way). */
static uint32_t g_fnv = 2166136261u;
static void hash_logits(const int8_t *logits) {
    for (int32_t i = 0; i < CHAR_LSTM_VOCAB_SIZE; i++) g_fnv = (g_fnv ^ (uint8_t)logits[i]) * 16777619u;
}

int main(void) {
    g_out = sh_open_tt(4);
    g_err = sh_open_tt(8);
    SYST_RVR = SYST_MASK;
    SYST_CVR = 0;
    SYST_CSR = 5; /* enabled, processor clock, no interrupt: polled */

    uint32_t t0 = SYST_CVR;
    calib_loop(FW_CALIB_LOOPS);
    const uint32_t calib_ticks = ticks_since(t0);

    static const int32_t prompt[FW_PROMPT_STEPS] = FW_PROMPT_TOKENS;
    uint64_t ticks = 0;
    uint32_t steps = 0;
    const int8_t *logits = NULL;
    char_lstm_reset(&g_state);
    for (uint32_t i = 0; i < FW_PROMPT_STEPS; i++) {
        t0 = SYST_CVR;
        logits = char_lstm_step(&g_state, prompt[i]);
        ticks += ticks_since(t0);
        steps++;
        if (!logits) return 4;
        hash_logits(logits);
    }
#ifdef FW_DECODE
    /* The same choices as the host's char_lstm_decode: up to FW_LENGTH characters, fewer
     * where the pattern's match ends. choose_ticks: the decoder's share of each character. */
    const char_lstm_pattern *pattern = FW_PATTERN;
    int32_t at = pattern ? pattern->start : 0;
    uint32_t generated = 0;
    uint64_t choose_ticks = 0;
    if (char_lstm_sampler_init(&g_sampler, FW_TEMPERATURE_MILLI, FW_TOP_K) != 0) return 5;
    char_lstm_rng_seed(&g_rng, FW_SEED, 0u);
    for (uint32_t i = 0; i < FW_LENGTH; i++) {
        t0 = SYST_CVR;
        const int32_t token =
            char_lstm_choose(&g_sampler, logits, pattern, at, (int32_t)(FW_LENGTH - i), &g_rng);
        const uint32_t chose = ticks_since(t0);
        if (token == CHAR_LSTM_END) break;
        if (pattern) at = char_lstm_pattern_next(pattern, at, token);
        if (i + 1 < FW_LENGTH) { /* no step after the last character */
            logits = char_lstm_step(&g_state, token);
            steps++;
        }
        ticks += ticks_since(t0);
        choose_ticks += chose;
        generated++;
        if (!logits) return 4;
        if (i + 1 < FW_LENGTH) hash_logits(logits);
        sh_write(g_out, char_lstm_vocab[token], str_len(char_lstm_vocab[token]));
    }
#else
    for (uint32_t i = 0; i < FW_LENGTH; i++) {
        t0 = SYST_CVR;
        const int32_t token = argmax(logits);
        if (i + 1 < FW_LENGTH) { /* no step after the last character */
            logits = char_lstm_step(&g_state, token);
            steps++;
        }
        ticks += ticks_since(t0);
        if (!logits) return 4;
        if (i + 1 < FW_LENGTH) hash_logits(logits);
        sh_write(g_out, char_lstm_vocab[token], str_len(char_lstm_vocab[token]));
    }
    const uint32_t generated = FW_LENGTH;
#endif
    sh_puts(g_err, "\nchar_lstm_stats");
    stat("steps", steps);
    stat("generated", generated);
#ifdef FW_DECODE
    stat("choose_ticks", choose_ticks);
#endif
    stat("step_ticks", ticks);
    stat("calib_instructions", 2u * (uint64_t)FW_CALIB_LOOPS);
    stat("calib_ticks", calib_ticks);
    stat("stack_bytes", stack_high_water());
    stat("logits_fnv", g_fnv);
    sh_puts(g_err, "\n");
    return 0;
}
