/* ARM semihosting (bkpt 0xAB on M-profile): console output, exit status. QEMU needs
 * -semihosting-config enable=on,target=native. */
#ifndef SEMIHOST_H_
#define SEMIHOST_H_
#include <stdint.h>

#define SH_SYS_OPEN 0x01
#define SH_SYS_WRITE 0x05
#define SH_SYS_EXIT_EXTENDED 0x20
#define SH_ADP_STOPPED_APPLICATION_EXIT 0x20026

static inline int32_t semihost(int32_t op, const void *arg) {
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void sh_write(int32_t fd, const char *text, uint32_t len);
void sh_puts(int32_t fd, const char *text);
int32_t sh_open_tt(int32_t mode); /* mode 4: stdout, 8: stderr of the emulator */
__attribute__((noreturn)) void sh_exit(int32_t code);

#endif
