/* Bare-metal start-up for QEMU's MPS2 boards (char-lstm-toolkit firmware): the vector
 * table, .data copy, .bss zeroing, a painted stack (for the measured high-water mark), and the
 * semihosting helpers. No C library: memset and memcpy, which GCC may call for struct copies
 * and zeroing even in freestanding code, are at the end. */
#include <stddef.h>
#include <stdint.h>

#include "semihost.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
int main(void);

#define STACK_PAINT 0x5AC3A55Cu

void sh_write(int32_t fd, const char *text, uint32_t len) {
    uint32_t block[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)text, len};
    if (len) semihost(SH_SYS_WRITE, block);
}

void sh_puts(int32_t fd, const char *text) {
    uint32_t n = 0;
    while (text[n]) n++;
    sh_write(fd, text, n);
}

int32_t sh_open_tt(int32_t mode) {
    uint32_t block[3] = {(uint32_t)(uintptr_t)":tt", (uint32_t)mode, 3};
    return semihost(SH_SYS_OPEN, block);
}

void sh_exit(int32_t code) {
    uint32_t block[2] = {SH_ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    for (;;) semihost(SH_SYS_EXIT_EXTENDED, block);
}

/* Bytes of the stack region that were ever written (painted at reset). */
uint32_t stack_high_water(void) {
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) p++;
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

__attribute__((noreturn)) void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss; dst++) *dst = 0;
    /* Paint the stack below the current frame (a few words of start-up frame are kept). */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (dst = &_sstack; dst < sp - 16; dst++) *dst = STACK_PAINT;
    sh_exit(main());
}

static void fault(const char *what) {
    int32_t err = sh_open_tt(8);
    sh_puts(err, "\nfirmware: ");
    sh_puts(err, what);
    sh_puts(err, "\n");
    sh_exit(70);
}

void HardFault_Handler(void) { fault("hard fault"); }
void NMI_Handler(void) { fault("NMI"); }
void Other_Handler(void) { fault("unexpected exception"); }

typedef void (*vector)(void);
__attribute__((section(".isr_vector"), used)) const vector g_vectors[16] = {
    (vector)(uintptr_t)&_estack, /* initial stack pointer */
    (vector)Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    Other_Handler, /* MemManage */
    Other_Handler, /* BusFault */
    Other_Handler, /* UsageFault */
    0, 0, 0, 0,
    Other_Handler, /* SVCall */
    Other_Handler, /* DebugMonitor */
    0,
    Other_Handler, /* PendSV */
    Other_Handler, /* SysTick (never enabled: the counter is polled) */
};

void *memset(void *d, int c, size_t n) {
    unsigned char *p = d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--) *p++ = *q++;
    return d;
}
