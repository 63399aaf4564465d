/* matvec_harness.h: the checks shared by the on-target test (firmware/src/matvec_test.c) and
 * the in-browser one (web/c/matvec_check.c): the C template's matvec_s8 twice, as
 * matvec_portable and as matvec_fast (the DSP or wasm SIMD body where the target has one), and
 * matvec_check_cases, which runs both on random and extreme data (odd rows, every x
 * alignment, NULL bias) and counts the outputs that differ. Part of char-lstm-toolkit; the
 * builders write it and matvec_s8.c (emit.py's matvec_source) beside the harness.
 *
 * Before including: MATVEC_MAX_W (the weight buffer's bytes) and MATVEC_ALIGN (its alignment). */
#include <stddef.h>
#include <stdint.h>

#define CHAR_LSTM_PORTABLE_MATVEC
#define matvec_s8 matvec_portable
#include "matvec_s8.c"
#undef matvec_s8
#undef CHAR_LSTM_PORTABLE_MATVEC
#define matvec_s8 matvec_fast
#include "matvec_s8.c"
#undef matvec_s8

static int8_t g_w[MATVEC_MAX_W] __attribute__((aligned(MATVEC_ALIGN)));
static int8_t g_x[576 + 8] __attribute__((aligned(MATVEC_ALIGN)));
static int32_t g_bias[2048], g_a[2049], g_b[2049];
static uint32_t g_rng = 2463534242u;

static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

static void fill(int8_t *p, int n, int mode) {
    for (int i = 0; i < n; i++)
        p[i] = mode == 0 ? (int8_t)rnd() : mode == 1 ? (int8_t)-128 : mode == 2 ? (int8_t)127
                                                                     : (int8_t)((i & 1) ? -128 : 127);
}

/* Every rows_list[i] x {4, 8, ..., 576} columns, 4 kinds of data, x at each of 4 alignments:
 * the number of differing outputs (and writes past the end); *cases counts the products. */
static uint32_t matvec_check_cases(const int *rows_list, unsigned n_rows, uint32_t *cases) {
    static const int cols_list[] = {4, 8, 12, 16, 20, 28, 60, 64, 68, 512, 576};
    uint32_t bad = 0;
    *cases = 0;
    for (unsigned ri = 0; ri < n_rows; ri++)
        for (unsigned ci = 0; ci < sizeof cols_list / sizeof *cols_list; ci++)
            for (int mode = 0; mode < 4; mode++)
                for (int off = 0; off < 4; off++) {
                    const int rows = rows_list[ri], cols = cols_list[ci];
                    fill(g_w, rows * cols, mode);
                    fill(g_x + off, cols, mode == 3 ? 1 : mode);
                    for (int r = 0; r < rows; r++) g_bias[r] = (int32_t)rnd() >> 4;
                    const int32_t *bias = (off & 1) ? NULL : g_bias;
                    for (int r = 0; r <= rows; r++) g_a[r] = g_b[r] = 0x7EADBEEF;
                    matvec_portable(g_w, g_x + off, bias, rows, cols, g_a);
                    matvec_fast(g_w, g_x + off, bias, rows, cols, g_b);
                    for (int r = 0; r < rows; r++) bad += g_a[r] != g_b[r];
                    bad += g_b[rows] != 0x7EADBEEF; /* no write past the end */
                    ++*cases;
                }
    return bad;
}
