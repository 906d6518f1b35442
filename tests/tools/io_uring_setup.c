/*
 * Sets up an io_uring and closes it: driftwatch's sensor tests check that
 * a ring made in a container raises a finding (its file operations would
 * bypass syscall tracing).
 */
#include <linux/io_uring.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	struct io_uring_params p;
	long fd;

	memset(&p, 0, sizeof(p));
	fd = syscall(SYS_io_uring_setup, 4, &p);
	if (fd < 0)
		return 1;
	return close(fd) != 0;
}
