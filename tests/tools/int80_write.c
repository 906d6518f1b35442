/*
 * Opens a file for appending and writes to it through the 32-bit syscall
 * gate (`int $0x80`) from a 64-bit program, as an attacker hiding from
 * 64-bit syscall tracing would. driftwatch's sensor tests check that the
 * write is still seen.
 *
 *   int80_write PATH TEXT
 *
 * Built `-static -no-pie` by the tests: the 32-bit gate takes 32-bit
 * pointers, so the strings are copied into this program's data, which
 * then lies below 4 GiB.
 */
#include <string.h>

static char path[4096];
static char text[4096];

static long sys32(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a), "c"(b), "d"(c)
			 : "memory");
	return ret;
}

int main(int argc, char **argv)
{
	/* i386: open 5, write 4, close 6; O_WRONLY|O_CREAT|O_APPEND. */
	long fd;

	if (argc != 3 || strlen(argv[1]) >= sizeof(path) ||
	    strlen(argv[2]) >= sizeof(text))
		return 2;
	strcpy(path, argv[1]);
	strcpy(text, argv[2]);
	fd = sys32(5, (long)path, 02101, 0644);
	if (fd < 0)
		return 1;
	if (sys32(4, fd, (long)text, (long)strlen(text)) < 0)
		return 1;
	return sys32(6, fd, 0, 0) < 0;
}
