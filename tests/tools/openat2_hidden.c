/*
 * Opens a file for writing with openat2 whose `struct open_how` sits in a
 * page that is not mapped at the moment of the call (a MAP_SHARED page
 * after MADV_DONTNEED): the kernel faults it back in, while an eBPF probe
 * read, which cannot fault, fails. driftwatch's sensor tests check that
 * such an open is still reported.
 *
 *   openat2_hidden PATH TEXT
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct open_how *how;
	long fd;

	if (argc != 3)
		return 2;
	how = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (how == MAP_FAILED)
		return 1;
	memset(how, 0, sizeof(*how));
	how->flags = O_WRONLY | O_CREAT | O_TRUNC;
	how->mode = 0644;
	if (madvise(how, 4096, MADV_DONTNEED) != 0)
		return 1;
	fd = syscall(SYS_openat2, AT_FDCWD, argv[1], how, sizeof(*how));
	if (fd < 0)
		return 1;
	if (write(fd, argv[2], strlen(argv[2])) < 0)
		return 1;
	return close(fd) != 0;
}
