/*
 * open(O_WRONLY|O_APPEND|O_CREAT) + write + close of PATH, N times, as fast
 * as it goes: a write flood (tests) and the finding-write loop of
 * bench/file_loops.sh.
 *
 *   write_loop PATH N
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long i, n;

	if (argc != 3)
		return 2;
	n = atol(argv[2]);
	for (i = 0; n < 0 || i < n; i++) {
		int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
		if (fd < 0 || write(fd, "x\n", 2) != 2 || close(fd) != 0)
			return 1;
	}
	return 0;
}
