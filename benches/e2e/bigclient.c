// bigclient: HTTP/1.1 keep-alive load client for LARGE bodies, used by compare.py (W3), plus a
// loopback throughput probe. wrk reads 8 KiB per syscall and saturates first on big bodies; this
// client uses one thread per connection and 1 MiB recv() calls.
//
//   bigclient get HOST PORT PATH CONNS SECONDS [RANGE]
//       -> bytes=B reqs=N bad=X errs=E secs=S GBps=G rps=R mean_lat_ms=L
//       bytes counts body bytes as received (partial responses included), reqs completed bodies,
//       bad = answers whose status was not 200 (206 with RANGE), errs = connection errors.
//   bigclient probe SECONDS
//       -> loopback_GBps=G   (one TCP stream over 127.0.0.1, 1 MiB writes and reads)
//
// Build: gcc -O2 -pthread -o bigclient bigclient.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)

static const char *host, *path, *range;
static int port;

typedef struct {
    unsigned long long bytes, reqs, bad, errs;
    double lat;
} counters_t;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void add(unsigned long long *c, unsigned long long v) { __atomic_add_fetch(c, v, __ATOMIC_RELAXED); }
static unsigned long long load(unsigned long long *c) { return __atomic_load_n(c, __ATOMIC_RELAXED); }

static int dial(int p) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(p)};
    inet_pton(AF_INET, host, &a.sin_addr);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        close(s);
        return -1;
    }
    return s;
}

static void *client(void *arg) {
    counters_t *c = arg;
    char *buf = malloc(BUF + 1);
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%sConnection: keep-alive\r\n\r\n",
                     path, host, port, range ? "Range: " : "", range ? range : "", range ? "\r\n" : "");
    int want = range ? 206 : 200;
    int s = -1;
    for (;;) {
        if (s < 0) {
            s = dial(port);
            if (s < 0) {
                add(&c->errs, 1);
                usleep(10000);
                continue;
            }
        }
        double t0 = now();
        if (write(s, req, n) != n) goto broken;
        size_t got = 0;
        char *eoh = NULL;
        while (!eoh) {
            if (got >= BUF) goto broken;
            ssize_t k = recv(s, buf + got, BUF - got, 0);
            if (k <= 0) goto broken;
            got += k;
            buf[got] = 0;
            eoh = strstr(buf, "\r\n\r\n");
        }
        int status = (got > 12) ? atoi(buf + 9) : 0;
        char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (!cl || cl > eoh) goto broken;
        long long len = atoll(cl + 17);
        long long body = got - ((eoh + 4) - buf);
        add(&c->bytes, body);
        while (body < len) {
            ssize_t k = recv(s, buf, BUF, 0);
            if (k <= 0) goto broken;
            body += k;
            add(&c->bytes, k);
        }
        if (status != want) add(&c->bad, 1);
        add(&c->reqs, 1);
        c->lat += now() - t0;  // read only by this thread until the end (approximate at exit)
        continue;
    broken:
        add(&c->errs, 1);
        close(s);
        s = -1;
    }
    return NULL;
}

static int get_main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: bigclient get HOST PORT PATH CONNS SECONDS [RANGE]\n");
        return 2;
    }
    host = argv[2];
    port = atoi(argv[3]);
    path = argv[4];
    int conns = atoi(argv[5]);
    double secs = atof(argv[6]);
    range = argc > 7 ? argv[7] : NULL;
    counters_t *cs = calloc(conns, sizeof *cs);
    double t0 = now();
    for (int i = 0; i < conns; i++) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 << 10);
        if (pthread_create(&th, &at, client, &cs[i])) {
            perror("pthread_create");
            return 1;
        }
    }
    struct timespec ts = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};
    nanosleep(&ts, NULL);
    double el = now() - t0;
    unsigned long long B = 0, Q = 0, bad = 0, errs = 0;
    double L = 0;
    for (int i = 0; i < conns; i++) {
        B += load(&cs[i].bytes);
        Q += load(&cs[i].reqs);
        bad += load(&cs[i].bad);
        errs += load(&cs[i].errs);
        L += cs[i].lat;
    }
    printf("bytes=%llu reqs=%llu bad=%llu errs=%llu secs=%.3f GBps=%.4f rps=%.2f mean_lat_ms=%.1f\n", B, Q, bad, errs,
           el, B / el / 1e9, Q / el, Q ? L / Q * 1e3 : 0.0);
    fflush(stdout);
    _exit(0);  // threads are blocked in recv(); the process exit closes their sockets
}

static int lsock;
static void *probe_sender(void *arg) {
    (void)arg;
    int s = accept(lsock, NULL, NULL);
    char *buf = calloc(1, BUF);
    for (;;)
        if (write(s, buf, BUF) <= 0) break;
    return NULL;
}

static int probe_main(int argc, char **argv) {
    double secs = argc > 2 ? atof(argv[2]) : 3;
    host = "127.0.0.1";
    lsock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, host, &a.sin_addr);
    socklen_t al = sizeof a;
    if (bind(lsock, (struct sockaddr *)&a, sizeof a) || listen(lsock, 1) ||
        getsockname(lsock, (struct sockaddr *)&a, &al)) {
        perror("probe listen");
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, probe_sender, NULL);
    int s = dial(ntohs(a.sin_port));
    if (s < 0) {
        perror("probe connect");
        return 1;
    }
    char *buf = malloc(BUF);
    unsigned long long B = 0;
    double t0 = now(), el = 0;
    while ((el = now() - t0) < secs) {
        ssize_t k = recv(s, buf, BUF, 0);
        if (k <= 0) break;
        B += k;
    }
    printf("loopback_GBps=%.3f bytes=%llu secs=%.2f\n", B / el / 1e9, B, el);
    fflush(stdout);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "get")) return get_main(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "probe")) return probe_main(argc, argv);
    fprintf(stderr, "usage: bigclient get HOST PORT PATH CONNS SECONDS [RANGE] | bigclient probe SECONDS\n");
    return 2;
}
