/*
 * Test-only shim for tests/cross_qemu.rs. qemu-user (7.2 in Debian 12; upstream support
 * was still a patch in late 2025) does not emulate the TCGETS2/TCSETS2 ioctls (termios2),
 * which the serialport crate uses on Linux to set the baud rate, so the VE.Direct bridge
 * cannot open a port under emulation ("Function not implemented"), although it does on a
 * real Raspberry Pi. Preloaded into the ARM pvbus processes, this turns those two ioctls
 * into the classic TCGETS/TCSETS, which qemu does emulate (the same fallback rustix uses
 * for WSL and seccomp sandboxes). Every other ioctl goes straight to the kernel. Never
 * shipped; compiled by the test with the cross gcc.
 */
#include <asm/ioctls.h>
#include <asm/termbits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Standard rates as Bxxx codes; others fall back to B38400 (a pty ignores the rate). */
static const struct { unsigned rate; unsigned code; } RATES[] = {
    {1200, B1200}, {2400, B2400}, {4800, B4800}, {9600, B9600}, {19200, B19200},
    {38400, B38400}, {57600, B57600}, {115200, B115200}, {230400, B230400},
};

static unsigned rate_of(unsigned code) {
    for (unsigned i = 0; i < sizeof RATES / sizeof RATES[0]; i++)
        if (RATES[i].code == code) return RATES[i].rate;
    return 38400;
}

static unsigned code_of(unsigned rate) {
    for (unsigned i = 0; i < sizeof RATES / sizeof RATES[0]; i++)
        if (RATES[i].rate == rate) return RATES[i].code;
    return B38400;
}

int ioctl(int fd, unsigned long request, ...) {
    va_list args;
    va_start(args, request);
    void *arg = va_arg(args, void *);
    va_end(args);

    if (request == TCGETS2) {
        struct termios classic;
        long r = syscall(SYS_ioctl, fd, TCGETS, &classic);
        if (r != 0) return (int)r;
        struct termios2 *t2 = arg;
        memset(t2, 0, sizeof *t2);
        t2->c_iflag = classic.c_iflag;
        t2->c_oflag = classic.c_oflag;
        t2->c_cflag = classic.c_cflag;
        t2->c_lflag = classic.c_lflag;
        t2->c_line = classic.c_line;
        memcpy(t2->c_cc, classic.c_cc, sizeof classic.c_cc);
        t2->c_ispeed = t2->c_ospeed = rate_of(classic.c_cflag & CBAUD);
        return 0;
    }
    if (request == TCSETS2 || request == TCSETSW2 || request == TCSETSF2) {
        const struct termios2 *t2 = arg;
        struct termios classic;
        memset(&classic, 0, sizeof classic);
        classic.c_iflag = t2->c_iflag;
        classic.c_oflag = t2->c_oflag;
        classic.c_cflag = t2->c_cflag;
        classic.c_lflag = t2->c_lflag;
        classic.c_line = t2->c_line;
        memcpy(classic.c_cc, t2->c_cc, sizeof classic.c_cc);
        if ((classic.c_cflag & CBAUD) == BOTHER)
            classic.c_cflag = (classic.c_cflag & ~CBAUD) | code_of(t2->c_ospeed);
        unsigned long classic_request = request == TCSETS2 ? TCSETS
                                      : request == TCSETSW2 ? TCSETSW : TCSETSF;
        return (int)syscall(SYS_ioctl, fd, classic_request, &classic);
    }
    return (int)syscall(SYS_ioctl, fd, request, arg);
}
