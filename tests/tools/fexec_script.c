/* fexec_script MODE FILE [ARGS...]: runs FILE (a #! script) through its
 * descriptor with fexecve, so the kernel and the interpreter only ever see
 * /dev/fd/N, never the script's path. MODE "fd" opens FILE itself; "memfd"
 * copies it into a memfd first, leaving no file at all. The descriptor is
 * not close-on-exec: the interpreter must be able to open /dev/fd/N. Built
 * static by tests/sensor.rs so that it runs inside the busybox test image. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "fd") && strcmp(argv[1], "memfd"))) {
        fprintf(stderr, "usage: fexec_script fd|memfd FILE [ARGS...]\n");
        return 2;
    }
    int in = open(argv[2], O_RDONLY);
    if (in < 0) {
        perror("fexec_script: open");
        return 1;
    }
    int fd = in;
    if (!strcmp(argv[1], "memfd")) {
        fd = memfd_create("payload", 0);
        if (fd < 0) {
            perror("fexec_script: memfd_create");
            return 1;
        }
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof buf)) > 0) {
            if (write(fd, buf, (size_t)n) != n) {
                perror("fexec_script: write");
                return 1;
            }
        }
        close(in);
    }
    fexecve(fd, argv + 2, environ);
    perror("fexec_script: fexecve");
    return 1;
}
