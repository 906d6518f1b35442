/*
 * File operations made through an io_uring only (no file syscall), for
 * driftwatch's sensor tests:
 *
 *   io_uring_ops open PATH          openat(O_WRONLY|O_CREAT|O_TRUNC), then a
 *                                   write, both through the ring
 *   io_uring_ops rename FROM TO     renameat
 *   io_uring_ops link FROM TO       linkat
 *   io_uring_ops symlink TEXT LINK  symlinkat
 *   io_uring_ops unlink PATH        unlinkat
 *
 * Exits 0 when every operation the ring completed succeeded.
 */
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int ring;
static struct io_uring_sqe *sqes;
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_cqe *cqes;

static void *map(int fd, size_t len, off_t what)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, what);
	return p == MAP_FAILED ? NULL : p;
}

static int setup(void)
{
	struct io_uring_params p;
	char *sq, *cq;

	memset(&p, 0, sizeof(p));
	ring = syscall(SYS_io_uring_setup, 4, &p);
	if (ring < 0)
		return -1;
	sq = map(ring, p.sq_off.array + p.sq_entries * sizeof(unsigned), IORING_OFF_SQ_RING);
	cq = map(ring, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
		 IORING_OFF_CQ_RING);
	sqes = map(ring, p.sq_entries * sizeof(struct io_uring_sqe), IORING_OFF_SQES);
	if (!sq || !cq || !sqes)
		return -1;
	sq_tail = (unsigned *)(sq + p.sq_off.tail);
	sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	sq_array = (unsigned *)(sq + p.sq_off.array);
	cq_head = (unsigned *)(cq + p.cq_off.head);
	cq_tail = (unsigned *)(cq + p.cq_off.tail);
	cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;
}

/* Submits one request and waits for it: its result (a negative errno). */
static int run(const struct io_uring_sqe *req)
{
	unsigned tail = *sq_tail, idx = tail & *sq_mask, head;
	int res;

	sqes[idx] = *req;
	sq_array[idx] = idx;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(SYS_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -1;
	head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
	if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE))
		return -1;
	res = cqes[head & *cq_mask].res;
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

int main(int argc, char **argv)
{
	struct io_uring_sqe q;
	const char *op;
	static const char text[] = "written through io_uring\n";
	int fd;

	if (argc < 3 || setup() != 0)
		return 2;
	op = argv[1];
	memset(&q, 0, sizeof(q));
	if (strcmp(op, "open") == 0) {
		q.opcode = IORING_OP_OPENAT;
		q.fd = AT_FDCWD;
		q.addr = (unsigned long)argv[2];
		q.open_flags = O_WRONLY | O_CREAT | O_TRUNC;
		q.len = 0644;
		fd = run(&q);
		if (fd < 0)
			return 1;
		memset(&q, 0, sizeof(q));
		q.opcode = IORING_OP_WRITE;
		q.fd = fd;
		q.addr = (unsigned long)text;
		q.len = sizeof(text) - 1;
		return run(&q) == (int)(sizeof(text) - 1) ? 0 : 1;
	}
	if (argc < 4 && strcmp(op, "unlink") != 0)
		return 2;
	if (strcmp(op, "rename") == 0) {
		q.opcode = IORING_OP_RENAMEAT;
		q.fd = AT_FDCWD;
		q.addr = (unsigned long)argv[2];
		q.len = AT_FDCWD;
		q.addr2 = (unsigned long)argv[3];
	} else if (strcmp(op, "link") == 0) {
		q.opcode = IORING_OP_LINKAT;
		q.fd = AT_FDCWD;
		q.addr = (unsigned long)argv[2];
		q.len = AT_FDCWD;
		q.addr2 = (unsigned long)argv[3];
	} else if (strcmp(op, "symlink") == 0) {
		q.opcode = IORING_OP_SYMLINKAT;
		q.fd = AT_FDCWD;
		q.addr = (unsigned long)argv[2];
		q.addr2 = (unsigned long)argv[3];
	} else if (strcmp(op, "unlink") == 0) {
		q.opcode = IORING_OP_UNLINKAT;
		q.fd = AT_FDCWD;
		q.addr = (unsigned long)argv[2];
	} else {
		return 2;
	}
	return run(&q) == 0 ? 0 : 1;
}
