/*
 * bqdrive: beanstalk-py's load driver in C (one epoll thread). Built on demand by run.py:
 *   cc -O2 -Wall -o bqdrive bqdrive.c
 * Same scenarios, options and one-line JSON output as loadgen.py (see its docstring); used
 * because the pure-Python driver cannot saturate beanstalkd (see README.md).
 *   bqdrive SCENARIO [-H host] [-p port] [-c conns] [-C consumers] [-k depth] [-b body]
 *                    [-t tube] [-w warmup] [-d duration] [-n jobs] [-L cap] [-m max] [-s pid]
 * Exit: 0 ok, 1 documented error replies seen, 3 fatal (desync, closed connection, timeout).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PUT, PIPELINE, CYCLE, FILL, DRAIN };
static const char *names[] = {"put", "pipeline", "cycle", "fill", "drain"};
enum { R_PUT, R_PROD, R_CONS };
#define RING 4096
#define INB (1 << 18)

typedef struct {
    int fd, role, parked, done;
    char *in; size_t inlen;
    char *out; size_t outlen, outcap;
    uint64_t ring[RING]; unsigned head, n;
} conn;

static int scen = -1, port = 11300, nconns = 1, ncons = -1, depth = 0, body = 100, cap = 100;
static int spid;
static const char *host = "127.0.0.1", *tube = "bench";
static double warm = 1, dur = 5, maxt = 300;
static long long njobs = 1000000, sent, ops, jobs, nerr, backlog, timeouts;
static int stopping, nfatal;
static uint64_t w0, w1;
static conn *cs;
static int ncs, ep;
static uint64_t *lat, *e2e; static size_t nlat, clat, ne2e, ce2e;
static char puthdr[64], *pad;
static char fatalmsg[200];

static uint64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
static void fatal(const char *m) { if (!nfatal++) snprintf(fatalmsg, sizeof fatalmsg, "%s", m); }
static void fatal_errno(const char *m) {
    char b[160]; snprintf(b, sizeof b, "%s: %s", m, strerror(errno)); fatal(b);
}
static void push(uint64_t **a, size_t *n, size_t *c, uint64_t v) {
    if (*n == *c) { *c = *c ? *c * 2 : 65536; *a = realloc(*a, *c * sizeof **a); if (!*a) exit(3); }
    (*a)[(*n)++] = v;
}
static void emit(conn *c, const char *s, size_t len, uint64_t now) {
    if (c->outlen + len > c->outcap) {
        c->outcap = (c->outlen + len) * 2; c->out = realloc(c->out, c->outcap); if (!c->out) exit(3);
    }
    memcpy(c->out + c->outlen, s, len); c->outlen += len;
    if (c->n == RING) { fatal("too many requests in flight"); return; }
    c->ring[(c->head + c->n++) % RING] = now;
}
static uint64_t pop(conn *c) {
    if (!c->n) { fatal("reply with nothing in flight"); return 0; }
    uint64_t t = c->ring[c->head]; c->head = (c->head + 1) % RING; c->n--; return t;
}
static void flush(conn *c) {
    if (!c->outlen) return;
    ssize_t k = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
    if (k < 0) { if (errno != EAGAIN) fatal_errno("send failed"); k = 0; }
    memmove(c->out, c->out + k, c->outlen - k); c->outlen -= k;
    struct epoll_event ev = {.events = EPOLLIN | (c->outlen ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}
static void send_put(conn *c, uint64_t now) {
    char b[256]; int h = snprintf(b, sizeof b, "%s", puthdr);
    char *bb = malloc(body + h + 2); if (!bb) exit(3);
    memcpy(bb, b, h);
    char ts[17]; snprintf(ts, sizeof ts, "%016llx", (unsigned long long)now);
    memcpy(bb + h, pad, body);
    memcpy(bb + h, ts, body < 16 ? body : 16);
    memcpy(bb + h + body, "\r\n", 2);
    emit(c, bb, h + body + 2, now); sent++;
    free(bb);
}
static void produce(conn *c, uint64_t now) {
    if (stopping) return;
    if (cap && backlog >= cap) { c->parked = 1; return; }
    backlog++; send_put(c, now);
}
static int is_doc_err(const char *l) {
    static const char *e[] = {"NOT_FOUND", "BURIED", "JOB_TOO_BIG", "DRAINING", "DEADLINE_SOON",
                              "OUT_OF_MEMORY", "INTERNAL_ERROR", 0};
    for (int i = 0; e[i]; i++) if (!strncmp(l, e[i], strlen(e[i]))) return 1;
    return 0;
}
static void unexpected(const char *l) {
    if (is_doc_err(l)) { nerr++; return; }
    char m[160]; snprintf(m, sizeof m, "unexpected reply '%.80s'", l); fatal(m);
}
static void again(conn *c, uint64_t now) {  /* consumer: next reserve */
    if (stopping || c->done) return;
    const char *r = scen == DRAIN ? "reserve-with-timeout 0\r\n" : "reserve-with-timeout 1\r\n";
    emit(c, r, strlen(r), now);
}

/* one reply line (and body for RESERVED) of connection c */
static void reply(conn *c, char *l, char *bod, long blen, uint64_t now) {
    int inw = now >= w0 && now < w1;
    uint64_t ts = pop(c);
    if (inw && ts) push(&lat, &nlat, &clat, now - ts);
    if (!strncmp(l, "INSERTED ", 9)) {
        if (inw || scen == FILL) { ops++; if (scen != PIPELINE && scen != CYCLE) jobs++; }
        if (scen == PIPELINE) {
            char b[64]; int k = snprintf(b, sizeof b, "delete %s\r\n", l + 9); emit(c, b, k, now);
        } else if (scen == CYCLE) produce(c, now);
        else if (scen == FILL) { if (sent < njobs) send_put(c, now); }
        else if (!stopping) send_put(c, now);
    } else if (!strcmp(l, "DELETED")) {
        if (inw || scen == DRAIN) { ops++; jobs++; }
        if (scen == PIPELINE) { if (!stopping) send_put(c, now); }
        else again(c, now);
    } else if (!strncmp(l, "RESERVED ", 9)) {
        backlog--;
        if (inw) ops++;
        if (scen == CYCLE) {
            if (blen != body) nerr++;
            else if (blen >= 16) {
                char h[17]; memcpy(h, bod, 16); h[16] = 0;
                uint64_t st = strtoull(h, 0, 16);
                if (inw && st && st <= now) push(&e2e, &ne2e, &ce2e, now - st);
            }
            for (int i = 0; i < ncs && !stopping; i++)  /* wake one parked producer */
                if (cs[i].parked) { cs[i].parked = 0; produce(&cs[i], now); flush(&cs[i]); break; }
        }
        char *id = l + 9, *sp = strchr(id, ' ');
        char b[64]; int k = snprintf(b, sizeof b, "delete %.*s\r\n", (int)(sp ? sp - id : 0), id);
        emit(c, b, k, now);
    } else if (!strcmp(l, "TIMED_OUT")) {
        timeouts++;
        if (scen == DRAIN) c->done = 1; else again(c, now);
    } else {
        unexpected(l);
        if (c->role == R_PROD) { backlog--; produce(c, now); }
        else if (c->role == R_CONS) again(c, now);
        else if (!stopping && (scen != FILL || sent < njobs)) send_put(c, now);
    }
}

static void onread(conn *c, uint64_t now) {
    for (int loops = 0; loops < 64; loops++) {
        ssize_t k = recv(c->fd, c->in + c->inlen, INB - c->inlen, 0);
        if (k == 0) { fatal("connection closed by server"); return; }
        if (k < 0) { if (errno != EAGAIN) fatal_errno("recv failed"); break; }
        c->inlen += k;
        size_t pos = 0;
        for (;;) {
            char *s = c->in + pos, *e = memmem(s, c->inlen - pos, "\r\n", 2);
            if (!e) break;
            if (e - s > 512) { fatal("reply line too long"); return; }
            long blen = 0; char *bod = 0; size_t next = (e - c->in) + 2;
            if (!strncmp(s, "RESERVED ", 9)) {
                char *sp = memchr(s + 9, ' ', e - s - 9);
                if (!sp) { fatal("malformed RESERVED"); return; }
                blen = strtol(sp + 1, 0, 10);
                if (blen < 0 || blen > INB / 2) { fatal("bad RESERVED size"); return; }
                if (next + blen + 2 > c->inlen) break;
                bod = c->in + next;
                if (memcmp(bod + blen, "\r\n", 2)) { fatal("RESERVED body without CRLF"); return; }
                next += blen + 2;
            }
            *e = 0; reply(c, s, bod, blen, now); pos = next;
            if (nfatal) return;
        }
        if (pos) { memmove(c->in, c->in + pos, c->inlen - pos); c->inlen -= pos; }
        if (c->inlen == INB) { fatal("input buffer full"); return; }
        if ((size_t)k < (size_t)INB / 4) break;
    }
    flush(c);
}

static int dial(int consumer) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (void *)&a, sizeof a)) { perror("bqdrive: connect"); exit(3); }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char b[512], want[512]; int k;
    if (consumer) {
        k = snprintf(b, sizeof b, "watch %s\r\nignore default\r\n", tube);
        snprintf(want, sizeof want, "WATCHING 2\r\nWATCHING 1\r\n");
    } else {
        k = snprintf(b, sizeof b, "use %s\r\n", tube);
        snprintf(want, sizeof want, "USING %s\r\n", tube);
    }
    if (write(fd, b, k) != k) { perror("bqdrive: setup"); exit(3); }
    size_t got = 0, wl = strlen(want);
    while (got < wl) {
        ssize_t r = read(fd, b + got, wl - got);
        if (r <= 0) { fprintf(stderr, "bqdrive: setup failed: %s\n", r ? strerror(errno) : "closed"); exit(3); }
        got += r;
    }
    if (memcmp(b, want, wl)) { fprintf(stderr, "bqdrive: setup: unexpected reply\n"); exit(3); }
    struct timeval z = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &z, sizeof z);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)) exit(3);
    return fd;
}

static double cpu_self(void) {
    struct rusage r; getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}
static double cpu_pid(int pid) {
    char p[64], b[1024]; snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r"); if (!f) return 0;
    size_t k = fread(b, 1, sizeof b - 1, f); fclose(f); b[k] = 0;
    char *s = strrchr(b, ')'); if (!s) return 0;
    unsigned long long ut = 0, st = 0;
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
    return (ut + st) / (double)sysconf(_SC_CLK_TCK);
}
static void machine(double *busy, double *total) {
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r"); if (!f) return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) < 4) v[0] = 0;
    fclose(f);
    *total = 0; for (int i = 0; i < 8; i++) *total += v[i];
    *busy = *total - v[3] - v[4];
}
static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b; return x < y ? -1 : x > y;
}
static void pct(const char *name, uint64_t *a, size_t n) {
    printf(",\"%s\":{\"n\":%zu", name, n);
    if (n) {
        qsort(a, n, sizeof *a, cmp);
        double s = 0; for (size_t i = 0; i < n; i++) s += a[i];
        double ps[] = {.5, .9, .99, .999}; const char *pn[] = {"p50", "p90", "p99", "p999"};
        printf(",\"mean\":%.1f", s / n / 1e3);
        for (int i = 0; i < 4; i++) {
            size_t j = (size_t)(ps[i] * n); if (j >= n) j = n - 1;
            printf(",\"%s\":%.1f", pn[i], a[j] / 1e3);
        }
        printf(",\"max\":%.1f", a[n - 1] / 1e3);
    }
    printf("}");
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bqdrive put|pipeline|cycle|fill|drain [opts]\n"); return 2; }
    for (int i = 0; i < 5; i++) if (!strcmp(argv[1], names[i])) scen = i;
    if (scen < 0) { fprintf(stderr, "bqdrive: unknown scenario %s\n", argv[1]); return 2; }
    int o; optind = 2;
    while ((o = getopt(argc, argv, "H:p:c:C:k:b:t:w:d:n:L:m:s:")) != -1) switch (o) {
        case 'H': host = optarg; break;           case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;   case 'C': ncons = atoi(optarg); break;
        case 'k': depth = atoi(optarg); break;    case 'b': body = atoi(optarg); break;
        case 't': tube = optarg; break;           case 'w': warm = atof(optarg); break;
        case 'd': dur = atof(optarg); break;      case 'n': njobs = atoll(optarg); break;
        case 'L': cap = atoi(optarg); break;      case 'm': maxt = atof(optarg); break;
        case 's': spid = atoi(optarg); break;     default: return 2;
    }
    if (!depth) depth = scen == PIPELINE || scen == FILL ? 64 : scen == DRAIN ? 16 : 1;
    if (scen == CYCLE) depth = 1;
    if (depth < 1 || depth > RING / 4 || nconns < 1 || nconns > 10000 || body < 0 || body > 65535)
        { fprintf(stderr, "bqdrive: bad option value\n"); return 2; }
    if (ncons < 0) ncons = nconns;
    if (scen != CYCLE) ncons = 0;
    snprintf(puthdr, sizeof puthdr, "put 1024 0 60 %d\r\n", body);
    pad = malloc(body + 1); memset(pad, 'x', body);
    ncs = nconns + ncons;
    cs = calloc(ncs, sizeof *cs);
    ep = epoll_create1(0);
    for (int i = 0; i < ncs; i++) {
        conn *c = &cs[i];
        c->role = scen == CYCLE ? (i < nconns ? R_PROD : R_CONS) : scen == DRAIN ? R_CONS : R_PUT;
        c->fd = dial(c->role == R_CONS);
        c->in = malloc(INB);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    int timed = scen <= CYCLE;
    uint64_t t0 = now_ns();
    w0 = t0 + (uint64_t)(warm * 1e9); w1 = w0 + (uint64_t)(dur * 1e9);
    if (!timed) { w0 = t0; w1 = t0 + (uint64_t)(maxt * 1e9); }
    uint64_t hard = timed ? w1 + 5000000000ull : w1;
    for (int i = 0; i < ncs; i++) {
        conn *c = &cs[i];
        for (int j = 0; j < depth; j++) {
            if (c->role == R_CONS) again(c, t0);
            else if (c->role == R_PROD) produce(c, t0);
            else if (scen != FILL || sent < njobs) send_put(c, t0);
        }
        flush(c);
    }
    double c0 = 0, s0 = 0, mb0 = 0, mt0 = 0, c1 = 0, s1 = 0, mb1 = 0, mt1 = 0;
    uint64_t tw0 = 0, tw1 = 0;
    int inwin = 0, timed_out = 0;
    if (!timed) { c0 = cpu_self(); s0 = cpu_pid(spid); machine(&mb0, &mt0); tw0 = t0; inwin = 1; }
    struct epoll_event evs[256];
    for (long it = 0; it < 2000000000L && !nfatal; it++) {
        int n = epoll_wait(ep, evs, 256, 20);
        uint64_t now = now_ns();
        if (!inwin && now >= w0) { c0 = cpu_self(); s0 = cpu_pid(spid); machine(&mb0, &mt0); tw0 = now; inwin = 1; }
        if (timed && !stopping && now >= w1) {
            stopping = 1; c1 = cpu_self(); s1 = cpu_pid(spid); machine(&mb1, &mt1); tw1 = now;
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLIN) onread(c, now);
            else if (evs[i].events & (EPOLLERR | EPOLLHUP)) fatal("connection error");
            if (evs[i].events & EPOLLOUT) flush(c);
        }
        int busy = 0;
        for (int i = 0; i < ncs; i++) if (cs[i].n) { busy = 1; break; }
        if (scen == FILL && sent >= njobs && !busy) break;
        if (scen == DRAIN && !busy) break;
        if (stopping && !busy) break;
        if (now >= hard) { timed_out = 1; if (timed) fatal("replies still missing 5 s after the end"); break; }
    }
    if (!timed || !tw1) { c1 = cpu_self(); s1 = cpu_pid(spid); machine(&mb1, &mt1); tw1 = now_ns(); }
    for (int i = 0; i < ncs; i++) close(cs[i].fd);
    double win = timed ? dur : (tw1 - tw0) / 1e9, wall = (tw1 - tw0) / 1e9;
    if (win <= 0) win = 1e-9;
    if (wall <= 0) wall = 1e-9;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double drv = (c1 - c0) / wall * 100, srv = (s1 - s0) / wall * 100;
    double mbusy = mt1 > mt0 ? (mb1 - mb0) / (mt1 - mt0) * 100 * ncpu : 0;
    printf("{\"tool\":\"bqdrive\",\"scenario\":\"%s\",\"workers\":1,\"conns\":%d,\"consumers\":%d,"
           "\"depth\":%d,\"body\":%d,\"warmup_s\":%g,\"duration_s\":%.3f,\"ops\":%lld,"
           "\"ops_per_s\":%.0f,\"jobs\":%lld,\"jobs_per_s\":%.0f,\"errors\":%lld,"
           "\"error_kinds\":{},\"timeouts\":%lld",
           names[scen], nconns, ncons, depth, body, timed ? warm : 0, win, ops, ops / win, jobs,
           jobs / win, nerr, timeouts);
    pct("lat_us", lat, nlat);
    if (scen == CYCLE) pct("e2e_us", e2e, ne2e);
    printf(",\"cpu\":{\"unit\":\"%% of one core\",\"driver\":%.1f,\"server\":", drv);
    if (spid) printf("%.1f", srv); else printf("null");
    printf(",\"machine_busy\":%.1f,\"other\":", mbusy);
    if (spid) printf("%.1f", mbusy - drv - srv); else printf("null");
    printf("},\"timed_out\":%s,\"ok\":%s", timed_out ? "true" : "false", nfatal ? "false" : "true");
    if (nfatal) printf(",\"fatal\":\"%s\"", fatalmsg);
    printf("}\n");
    return nfatal ? 3 : nerr ? 1 : 0;
}
