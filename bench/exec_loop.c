/* exec_loop PATH N: fork + execve(PATH, {basename, NULL}) N times, one
 * at a time, reaping each child. Prints one line:
 *   execs=N secs=S us_per_exec=U killed=K exited=E other=O
 * where killed counts children that died by SIGKILL (an exec the sensor
 * killed), exited those that exited normally. Built static by
 * bench/enforce.sh so it runs inside the busybox bench container. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: exec_loop PATH N\n");
        return 2;
    }
    const char *path = argv[1];
    long n = atol(argv[2]);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *args[] = {(char *)base, NULL};
    char *env[] = {NULL};
    long killed = 0, exited = 0, other = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            execve(path, args, env);
            _exit(127);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0) {
            perror("waitpid");
            return 1;
        }
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
            killed++;
        else if (WIFEXITED(st))
            exited++;
        else
            other++;
    }
    double secs = now() - t0;
    printf("execs=%ld secs=%.3f us_per_exec=%.1f killed=%ld exited=%ld other=%ld\n", n, secs,
           secs * 1e6 / (double)n, killed, exited, other);
    return 0;
}
