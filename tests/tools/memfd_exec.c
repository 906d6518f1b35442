/* memfd_exec NAME FILE ARGV0 [ARGS...]: copies FILE into a memfd named NAME
 * and executes it, as fileless malware does. Built static by tests/sensor.rs
 * so that it runs inside the busybox test image. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: memfd_exec NAME FILE ARGV0 [ARGS...]\n");
        return 2;
    }
    int fd = memfd_create(argv[1], MFD_CLOEXEC);
    int in = open(argv[2], O_RDONLY);
    if (fd < 0 || in < 0) {
        perror("memfd_exec: open");
        return 1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        if (write(fd, buf, (size_t)n) != n) {
            perror("memfd_exec: write");
            return 1;
        }
    }
    fexecve(fd, argv + 3, environ);
    perror("memfd_exec: fexecve");
    return 1;
}
