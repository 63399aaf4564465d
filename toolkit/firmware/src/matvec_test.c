/* On-target check of matvec_s8: the board's body (DSP on a Cortex-M4/M7) against the portable
 * C on random and extreme data, odd rows, unaligned x, NULL bias; then instructions per MAC of
 * each (SysTick under qemu -icount shift=0). Exit status: the number of mismatches, at most
 * 100. matvec_s8.c is the C template's matvec_s8 section, written beside this file. */
#include <stddef.h>
#include <stdint.h>

#include "semihost.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

#define MATVEC_MAX_W (256 * 512)
#define MATVEC_ALIGN 4
#include "matvec_harness.h" /* matvec_portable, matvec_fast, fill, matvec_check_cases */

static int32_t g_err;

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
    uint32_t cases;
    const uint32_t bad = matvec_check_cases(rows_list, sizeof rows_list / sizeof *rows_list, &cases);
    sh_puts(g_err, "matvec_check cases=");
    put_u(cases);
    sh_puts(g_err, " mismatches=");
    put_u(bad);
    sh_puts(g_err, "\n");
    /* Calibration: 2 instructions per pass. */
    uint32_t t0 = SYST_CVR, n = 1000000u;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+l"(n) : : "cc");
    const uint32_t calib = (t0 - SYST_CVR) & 0xFFFFFFu;
    fill(g_w, MATVEC_MAX_W, 0);
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
