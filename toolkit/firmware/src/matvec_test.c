/* On-target check of matvec_s8: the board's body (DSP on a Cortex-M4/M7) against the portable
 * C on random and extreme data, odd rows, unaligned x, NULL bias; then instructions per MAC of
 * each (SysTick under qemu -icount shift=0). Exit status: the number of mismatches, at most
 * 100. matvec_s8.c is the C template's matvec_s8 section, written beside this file. */
#include <stddef.h>
#include <stdint.h>

#include "semihost.h"

#define CHAR_LSTM_PORTABLE_MATVEC
#define matvec_s8 matvec_portable
#include "matvec_s8.c"
#undef matvec_s8
#undef CHAR_LSTM_PORTABLE_MATVEC
#define matvec_s8 matvec_fast
#include "matvec_s8.c"
#undef matvec_s8

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

#define MAX_W (256 * 512)
static int8_t g_w[MAX_W] __attribute__((aligned(4)));
static int8_t g_x[576 + 8] __attribute__((aligned(4)));
static int32_t g_bias[2048], g_a[2048], g_b[2048];
static uint32_t g_rng = 2463534242u;
static int32_t g_err;

static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

static void put_u(uint32_t v) {
    char buf[12];
    int i = 11;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    sh_puts(g_err, buf + i);
}

static void fill(int8_t *p, int n, int mode) {
    for (int i = 0; i < n; i++)
        p[i] = mode == 0 ? (int8_t)rnd() : mode == 1 ? (int8_t)-128 : mode == 2 ? (int8_t)127
                                                                     : (int8_t)((i & 1) ? -128 : 127);
}

/* rows x cols in calls of `block` rows each (the generated step calls 4 rows at a time). */
static uint32_t ticks(void (*f)(const int8_t *, const int8_t *, const int32_t *, int, int, int32_t *),
                      int rows, int cols, int block) {
    uint32_t t0 = SYST_CVR;
    for (int r = 0; r < rows; r += block)
        f(g_w + (size_t)r * (size_t)cols, g_x, g_bias + r, rows - r < block ? rows - r : block, cols,
          g_a + r);
    return (t0 - SYST_CVR) & 0xFFFFFFu;
}

int main(void) {
    g_err = sh_open_tt(8);
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5;
    static const int rows_list[] = {1, 2, 3, 4, 5, 7, 64, 65, 130};
    static const int cols_list[] = {4, 8, 12, 16, 20, 28, 60, 64, 68, 512, 576};
    uint32_t cases = 0, bad = 0;
    for (unsigned ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++) {
        for (unsigned ci = 0; ci < sizeof cols_list / sizeof *cols_list; ci++) {
            const int rows = rows_list[ri], cols = cols_list[ci];
            for (int mode = 0; mode < 4; mode++) {
                for (int off = 0; off < 4; off++) { /* x at every alignment */
                    fill(g_w, rows * cols, mode);
                    fill(g_x + off, cols, mode == 3 ? 1 : mode);
                    for (int r = 0; r < rows; r++) g_bias[r] = (int32_t)rnd() >> 4;
                    const int32_t *bias = (off & 1) ? NULL : g_bias;
                    for (int r = 0; r <= rows; r++) g_a[r] = g_b[r] = 0x7EADBEEF;
                    matvec_portable(g_w, g_x + off, bias, rows, cols, g_a);
                    matvec_fast(g_w, g_x + off, bias, rows, cols, g_b);
                    cases++;
                    for (int r = 0; r < rows; r++) bad += g_a[r] != g_b[r];
                    bad += g_b[rows] != 0x7EADBEEF; /* no write past the end */
                }
            }
        }
    }
    sh_puts(g_err, "matvec_check cases=");
    put_u(cases);
    sh_puts(g_err, " mismatches=");
    put_u(bad);
    sh_puts(g_err, "\n");
    /* Calibration: 2 instructions per pass. */
    uint32_t t0 = SYST_CVR, n = 1000000u;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+l"(n) : : "cc");
    const uint32_t calib = (t0 - SYST_CVR) & 0xFFFFFFu;
    fill(g_w, MAX_W, 0);
    fill(g_x, 576, 0);
    static const int shapes[][3] = {{256, 512, 256}, {256, 64, 256}, {65, 512, 65}, {256, 512, 4}, {65, 512, 4}};
    for (unsigned s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1], block = shapes[s][2];
        sh_puts(g_err, "matvec_stats rows=");
        put_u((uint32_t)rows);
        sh_puts(g_err, " cols=");
        put_u((uint32_t)cols);
        sh_puts(g_err, " block=");
        put_u((uint32_t)block);
        sh_puts(g_err, " portable_ticks=");
        put_u(ticks(matvec_portable, rows, cols, block));
        sh_puts(g_err, " fast_ticks=");
        put_u(ticks(matvec_fast, rows, cols, block));
        sh_puts(g_err, " calib_instructions=2000000 calib_ticks=");
        put_u(calib);
        sh_puts(g_err, "\n");
    }
    return bad ? (bad > 100 ? 100 : (int)bad) : 0;
}
