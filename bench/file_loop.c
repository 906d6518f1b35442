/*
 * A tight file-syscall loop for bench/file_loops.sh (built static, run in a
 * podman container):
 *
 *   file_loop read PATH N     open(O_RDONLY) + close, N times
 *   file_loop append PATH N   open(O_WRONLY|O_APPEND|O_CREAT) + write + close
 *
 * Prints the loop's own time in seconds.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec a, b;
	long i, n;
	int append;

	if (argc != 4)
		return 2;
	append = strcmp(argv[1], "append") == 0;
	n = atol(argv[3]);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (i = 0; i < n; i++) {
		int fd = append ? open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644)
				: open(argv[2], O_RDONLY);
		if (fd < 0)
			return 1;
		if (append && write(fd, "x\n", 2) != 2)
			return 1;
		if (close(fd) != 0)
			return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
	return 0;
}
