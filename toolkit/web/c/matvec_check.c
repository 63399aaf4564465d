/* matvec_s8's wasm SIMD body against the portable C on random and extreme data (odd rows,
 * cols % 8 == 4, unaligned x, NULL bias), and timing entries for node. matvec_s8.c is the C
 * template's matvec_s8 section (toolkit/web/wasm.py writes it beside this file). */
#include <stddef.h>
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(#name)))

#define CHAR_LSTM_PORTABLE_MATVEC
#define matvec_s8 matvec_portable
#include "matvec_s8.c"
#undef matvec_s8
#undef CHAR_LSTM_PORTABLE_MATVEC
#define matvec_s8 matvec_fast
#include "matvec_s8.c"
#undef matvec_s8

#define MAX_W (2048 * 576)
static int8_t g_w[MAX_W] __attribute__((aligned(16)));
static int8_t g_x[576 + 8] __attribute__((aligned(16)));
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

static int32_t g_cases;
EXPORT(cases) int32_t cases(void) { return g_cases; }

/* The number of mismatching outputs over all cases (0 = same bits). */
EXPORT(check) int32_t check(void) {
    static const int rows_list[] = {1, 2, 3, 4, 5, 7, 8, 64, 65, 130};
    static const int cols_list[] = {4, 8, 12, 16, 20, 28, 60, 64, 68, 512, 576};
    int32_t bad = 0;
    g_cases = 0;
    for (unsigned ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++)
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
                    bad += g_b[rows] != 0x7EADBEEF;
                    g_cases++;
                }
    return bad;
}

EXPORT(prepare) void prepare(void) {
    fill(g_w, MAX_W, 0);
    fill(g_x, 576, 0);
}
/* One product of the 1x512 model's gate shape, [2048][576]: fast (1) or portable (0). */
EXPORT(run) int32_t run(int32_t fast, int32_t rows, int32_t cols) {
    (fast ? matvec_fast : matvec_portable)(g_w, g_x, g_bias, rows, cols, g_a);
    return g_a[0];
}

/* rows x cols in calls of `block` rows (the generated step calls 4 rows at a time). */
EXPORT(run_blocks) int32_t run_blocks(int32_t fast, int32_t rows, int32_t cols, int32_t block) {
    for (int32_t r = 0; r < rows; r += block)
        (fast ? matvec_fast : matvec_portable)(g_w + (size_t)r * (size_t)cols, g_x, g_bias + r,
                                               rows - r < block ? rows - r : block, cols, g_a + r);
    return g_a[0];
}
