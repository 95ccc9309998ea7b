/*
 * What this machine's own PTY delivers, with nothing of Corral involved:
 * `cat FILE` on the peer of a fresh PTY, the master read in 64 KiB reads
 * until EOF, in the terminal's usual (cooked: OPOST|ONLCR) mode and in raw
 * mode. It bounds bench/terminal.py's `cat` throughput from above.
 *
 *   cc -O2 -o /tmp/pty-ceiling bench/pty-ceiling.c -lutil
 *   /tmp/pty-ceiling FILE        (prints MB/s cooked, then raw)
 *
 * Use a text file like terminal.py's (80-byte lines): output processing
 * costs per line, so the cooked number depends on the line length.
 */
#define _GNU_SOURCE
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static double run(const char *file, int raw) {
    int master;
    pid_t child = forkpty(&master, NULL, NULL, NULL);
    if (child < 0) {
        perror("forkpty");
        exit(1);
    }
    if (child == 0) {
        if (raw) {
            struct termios t;
            tcgetattr(0, &t);
            cfmakeraw(&t);
            tcsetattr(0, TCSANOW, &t);
        }
        execlp("cat", "cat", file, (char *)NULL);
        _exit(127);
    }
    static char buf[1 << 16];
    long total = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (;;) {
        ssize_t n = read(master, buf, sizeof buf);
        if (n <= 0) /* EIO once cat has exited and the peer is closed */
            break;
        total += n;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    waitpid(child, NULL, 0);
    close(master);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    return (double)total / secs / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    printf("cooked %.0f MB/s\n", run(argv[1], 0));
    printf("raw    %.0f MB/s\n", run(argv[1], 1));
    return 0;
}
