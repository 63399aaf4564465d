/* matvec_s8's wasm SIMD body against the portable C on random and extreme data (odd rows,
 * cols % 8 == 4, unaligned x, NULL bias), and timing entries for node. matvec_s8.c is the C
 * template's matvec_s8 section (toolkit/web/wasm.py writes it beside this file). */
#include <stddef.h>
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(#name)))

#define MATVEC_MAX_W (2048 * 576)
#define MATVEC_ALIGN 16
#include "matvec_harness.h" /* matvec_portable, matvec_fast, fill, matvec_check_cases */

static int32_t g_cases;
EXPORT(cases) int32_t cases(void) { return g_cases; }

/* The number of mismatching outputs over all cases (0 = same bits). */
EXPORT(check) int32_t check(void) {
    static const int rows_list[] = {1, 2, 3, 4, 5, 7, 8, 64, 65, 130};
    uint32_t n;
    const uint32_t bad = matvec_check_cases(rows_list, sizeof rows_list / sizeof *rows_list, &n);
    g_cases = (int32_t)n;
    return (int32_t)bad;
}

EXPORT(prepare) void prepare(void) {
    fill(g_w, MATVEC_MAX_W, 0);
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
