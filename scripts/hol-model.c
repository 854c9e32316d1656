// A lean model of `simplemsgr bench --hol` (BENCHMARKS.md, issue 6): what the least a
// program can do gets on this machine, to compare the messenger's numbers against.
//
// One loopback TCP connection. A bulk thread writes a 256 MiB message as 64 KiB chunk
// records; the pinging thread raises a flag and the bulk thread writes the ping between
// two chunks (as the runtime's writer does). The server's single reader copies each chunk
// into a fresh anonymous mapping (populated with MADV_POPULATE_WRITE, as the runtime's
// landing does) and answers a ping at once, from the reader itself. No protocol, no CRC,
// no session, no dispatcher: the floor for one connection that carries both.
//
//   gcc -O2 -pthread scripts/hol-model.c -o /tmp/hol-model
//   /tmp/hol-model [sockbuf KiB = 128] [NOTSENT_LOWAT KiB = 16] [yield = 1] [hop = 0]
//
// `yield` 1 makes both bulk threads sched_yield() after each chunk (`ms_chunk_yield`);
// `hop` 1 adds a client reader thread that hands each answer to the pinging thread
// through a condition variable (the runtime's dispatcher-to-application hand-off).
// Prints idle and in-flight round-trip p50/p99 and their ratio, like the bench's `on` row.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define CHUNK (64 << 10)
#define BIG (256UL << 20)
#define IDLE_PINGS 500
#define MAX_PINGS 100000

enum { PING = 1, CHUNK_REC = 2, PONG = 3, DONE = 4 };
struct hdr {
    uint8_t type;
    uint32_t len;
    uint64_t arg; // ping id, or the chunk's offset
} __attribute__((packed));

static int cfd, sfd;
static int sockbuf = 128 << 10, lowat = 16 << 10, yield_ = 1, hop;
static atomic_int ping_pending;
static atomic_ulong ping_id;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void write_all(int fd, const void *b, size_t n) {
    const char *p = b;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) { perror("write"); exit(1); }
        p += w;
        n -= (size_t)w;
    }
}

static void read_all(int fd, void *b, size_t n) {
    char *p = b;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) { perror("read"); exit(1); }
        p += r;
        n -= (size_t)r;
    }
}

static void send_ping(unsigned long id) {
    struct hdr h = {PING, 0, id};
    write_all(cfd, &h, sizeof h);
}

static void *bulk(void *unused) {
    (void)unused;
    char *src = malloc(CHUNK);
    memset(src, 0xab, CHUNK);
    for (size_t off = 0; off < BIG; off += CHUNK) {
        if (atomic_exchange(&ping_pending, 0)) send_ping(atomic_load(&ping_id));
        struct hdr h = {CHUNK_REC, CHUNK, off};
        struct iovec v[2] = {{&h, sizeof h}, {src, CHUNK}};
        ssize_t w = writev(cfd, v, 2);
        if (w < 0) { perror("writev"); exit(1); }
        size_t done = (size_t)w;
        if (done < sizeof h) {
            write_all(cfd, (char *)&h + done, sizeof h - done);
            done = sizeof h;
        }
        write_all(cfd, src + (done - sizeof h), CHUNK - (done - sizeof h));
        if (yield_) sched_yield();
    }
    return 0;
}

static void *server(void *unused) {
    (void)unused;
    char *land = mmap(0, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *buf = malloc(CHUNK);
    size_t got = 0;
    for (;;) {
        struct hdr h;
        read_all(sfd, &h, sizeof h);
        if (h.type == PING) {
            struct hdr p = {PONG, 0, h.arg};
            write_all(sfd, &p, sizeof p);
            continue;
        }
        read_all(sfd, buf, h.len);
        madvise(land + h.arg, h.len, MADV_POPULATE_WRITE);
        memcpy(land + h.arg, buf, h.len);
        got += h.len;
        if (got == BIG) {
            struct hdr d = {DONE, 0, 0};
            write_all(sfd, &d, sizeof d);
        }
        if (yield_) sched_yield();
    }
    return 0;
}

// The optional hand-off (`hop`): a client reader thread queues what arrives.
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct hdr queue[1 << 16];
static unsigned qhead, qtail;

static void *client_reader(void *unused) {
    (void)unused;
    for (;;) {
        struct hdr h;
        read_all(cfd, &h, sizeof h);
        pthread_mutex_lock(&mu);
        queue[qtail++ & 0xffff] = h;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
    return 0;
}

static struct hdr next_answer(void) {
    struct hdr h;
    if (!hop) {
        read_all(cfd, &h, sizeof h);
        return h;
    }
    pthread_mutex_lock(&mu);
    while (qhead == qtail) pthread_cond_wait(&cv, &mu);
    h = queue[qhead++ & 0xffff];
    pthread_mutex_unlock(&mu);
    return h;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void set_buffers(int fd) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof sockbuf);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof sockbuf);
}

int main(int argc, char **argv) {
    if (argc > 1) sockbuf = atoi(argv[1]) << 10;
    if (argc > 2) lowat = atoi(argv[2]) << 10;
    if (argc > 3) yield_ = atoi(argv[3]);
    if (argc > 4) hop = atoi(argv[4]);
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    set_buffers(l);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr = {htonl(INADDR_LOOPBACK)}};
    socklen_t alen = sizeof a;
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &alen)) {
        perror("listen");
        return 1;
    }
    cfd = socket(AF_INET, SOCK_STREAM, 0);
    set_buffers(cfd);
    if (connect(cfd, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    sfd = accept(l, 0, 0);
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (lowat) setsockopt(cfd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
    pthread_t t;
    pthread_create(&t, 0, server, 0);
    if (hop) pthread_create(&t, 0, client_reader, 0);

    static double idle[IDLE_PINGS], busy[MAX_PINGS];
    for (int i = 0; i < IDLE_PINGS; i++) {
        double t0 = now_us();
        send_ping((unsigned long)i);
        next_answer();
        idle[i] = now_us() - t0;
    }
    int nb = 0;
    double start = now_us();
    pthread_create(&t, 0, bulk, 0);
    for (unsigned long id = IDLE_PINGS; nb < MAX_PINGS; id++) {
        double t0 = now_us();
        atomic_store(&ping_id, id);
        atomic_store(&ping_pending, 1);
        if (next_answer().type == DONE) break;
        busy[nb++] = now_us() - t0;
    }
    double transfer = now_us() - start;
    qsort(idle, IDLE_PINGS, sizeof(double), by_value);
    qsort(busy, (size_t)nb, sizeof(double), by_value);
    double i99 = idle[IDLE_PINGS * 99 / 100], b99 = busy[nb * 99 / 100];
    printf("idle p50 %.3f p99 %.3f ms | in-flight p50 %.3f p99 %.3f max %.3f ms (%d pings) | "
           "transfer %.1f ms | in-flight p99 / idle p99 %.1fx\n",
           idle[IDLE_PINGS / 2] / 1e3, i99 / 1e3, busy[nb / 2] / 1e3, b99 / 1e3,
           busy[nb - 1] / 1e3, nb, transfer / 1e3, b99 / i99);
    return 0;
}
