/*
 * The shared plugin app, in C: GET / hello, POST /echo, GET /alloc/{kib} (with malloc),
 * GET /upstream?to=IP:PORT (an outbound call through the host), GET /greeting (set by init
 * from the config file's [plugin] section).
 * C only: GET /foreign/realloc/{i} and /foreign/free/{i} realloc or free, inside a handler, the
 * i-th of the blocks init malloc'ed (from the system allocator); GET /overflow and
 * /overflow/init report what allocation sizes that overflow returned, in a handler and in init;
 * GET /libc/time, /libc/resolve and /libc/printf?fill=N use libc state that libc sets up
 * lazily, with malloc, the first time a handler needs it (tzset, NSS, stdout's buffer).
 *
 * Build: cc -shared -fPIC -O2 -I runtime/include -o libapp_c.so tests/plugins/c/app.c
 * -DAPP_ABI_VERSION=N builds it for another ABI version; -DAPP_NO_ENTRY leaves out the entry;
 * -DAPP_OVERFLOW_IN_INIT makes init call the allocator with overflowing sizes too.
 */
#define _GNU_SOURCE /* pvalloc, memalign, valloc, reallocarray, malloc_usable_size */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cella.h"

#ifndef APP_ABI_VERSION
#define APP_ABI_VERSION CELLA_ABI_VERSION
#endif

static char greeting[64] = "no greeting";

static int equals(CellaStr s, const char *literal) {
    size_t n = strlen(literal);
    return s.len == n && memcmp(s.ptr, literal, n) == 0;
}

static int starts_with(CellaStr s, const char *prefix) {
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

static void respond(const CellaHost *host, CellaResponse *response, uint16_t status,
                    const char *content_type, const void *body, size_t len) {
    host->response_set_status(response, status);
    CellaStr type = { (const uint8_t *)content_type, strlen(content_type) };
    host->response_add_header(response, CELLA_STR("content-type"), type);
    CellaStr bytes = { (const uint8_t *)body, len };
    host->response_write(response, bytes);
}

static void text(const CellaHost *host, CellaResponse *response, uint16_t status, const char *message) {
    respond(host, response, status, "text/plain; charset=utf-8", message, strlen(message));
}

static void alloc(const CellaHost *host, CellaResponse *response, CellaStr path) {
    size_t kib = 0;
    for (size_t i = strlen("/alloc/"); i < path.len; i++) {
        if (path.ptr[i] < '0' || path.ptr[i] > '9') { text(host, response, 400, "bad kib\n"); return; }
        kib = kib * 10 + (size_t)(path.ptr[i] - '0');
    }
    size_t bytes = kib * 1024;
    unsigned char *buffer = malloc(bytes);  /* past the arena, the host answers 500 */
    if (buffer == NULL && bytes > 0) { text(host, response, 500, "malloc failed\n"); return; }
    memset(buffer, 1, bytes);
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%zu", bytes);
    free(buffer);
    respond(host, response, 200, "text/plain; charset=utf-8", digits, (size_t)n);
}

static void upstream(const CellaHost *host, const CellaRequest *request, CellaResponse *response) {
    CellaStr query = host->request_query(request);
    if (!starts_with(query, "to=")) { text(host, response, 400, "expected ?to=IP:PORT\n"); return; }
    CellaStr address = { query.ptr + 3, query.len - 3 };
    uint32_t socket;
    if (host->tcp_connect(request, address, 5000, &socket) != CELLA_STATUS_OK) {
        text(host, response, 502, "connect failed\n");
        return;
    }
    static const char get[] = "GET / HTTP/1.1\r\nhost: upstream\r\nconnection: close\r\n\r\n";
    CellaStr out = { (const uint8_t *)get, sizeof get - 1 };
    if (host->tcp_write(request, socket, out, 5000) != CELLA_STATUS_OK) {
        text(host, response, 502, "write failed\n");
        return;
    }
    size_t capacity = 256, used = 0;
    char *received = malloc(capacity);
    for (;;) {
        if (used == capacity) { capacity *= 2; received = realloc(received, capacity); }
        size_t n = 0;
        if (host->tcp_read(request, socket, (uint8_t *)received + used, capacity - used, 5000, &n) != CELLA_STATUS_OK) {
            text(host, response, 502, "read failed\n");
            return;
        }
        if (n == 0) break;
        used += n;
    }
    host->tcp_close(request, socket);
    const char *body = NULL;
    for (size_t i = 0; i + 3 < used; i++) {
        if (memcmp(received + i, "\r\n\r\n", 4) == 0) { body = received + i + 4; break; }
    }
    if (body == NULL || used < 12) { text(host, response, 502, "bad upstream response\n"); return; }
    uint16_t status = (uint16_t)atoi(received + 9);
    respond(host, response, status, "application/octet-stream", body, used - (size_t)(body - received));
}

/* Blocks malloc'ed by init, one per /foreign request; a request takes its block atomically
 * (handlers run on several workers at once). */
#define FOREIGN_BLOCKS 600
#define FOREIGN_BLOCK_BYTES 100
static unsigned char *foreign[FOREIGN_BLOCKS];

/* The index after `prefix` in `path`, or -1. */
static long index_after(CellaStr path, const char *prefix) {
    size_t n = strlen(prefix);
    if (path.len <= n || path.len > n + 6) return -1;
    long index = 0;
    for (size_t i = n; i < path.len; i++) {
        if (path.ptr[i] < '0' || path.ptr[i] > '9') return -1;
        index = index * 10 + (path.ptr[i] - '0');
    }
    return index < FOREIGN_BLOCKS ? index : -1;
}

static unsigned char *take_foreign(long index) {
    return __atomic_exchange_n(&foreign[index], NULL, __ATOMIC_ACQ_REL);
}

/* realloc grows the block into the request's arena: its bytes must come along. */
static void foreign_realloc(const CellaHost *host, CellaResponse *response, long index) {
    unsigned char *block = take_foreign(index);
    if (block == NULL) { text(host, response, 410, "gone\n"); return; }
    unsigned char *grown = realloc(block, 4096);
    if (grown == NULL) { text(host, response, 500, "realloc failed\n"); return; }
    for (size_t i = 0; i < FOREIGN_BLOCK_BYTES; i++) {
        if (grown[i] != (unsigned char)index) { text(host, response, 500, "contents lost\n"); return; }
    }
    memset(grown + FOREIGN_BLOCK_BYTES, 0xab, 4096 - FOREIGN_BLOCK_BYTES);
    size_t usable = malloc_usable_size(grown);
    grown = realloc(grown, 8192); /* an arena block now: grows in place */
    int kept = grown != NULL && grown[0] == (unsigned char)index && grown[4095] == 0xab;
    free(grown);
    text(host, response, kept && usable >= 4096 ? 200 : 500, kept ? "moved\n" : "lost\n");
}

static void foreign_free(const CellaHost *host, CellaResponse *response, long index) {
    unsigned char *block = take_foreign(index);
    if (block == NULL) { text(host, response, 410, "gone\n"); return; }
    free(block);
    text(host, response, 200, "freed\n");
}

/* Calls every allocation function with a size that overflows; writes which of them did not
 * return NULL with errno ENOMEM ("all NULL" when each did). `volatile` keeps the compiler from
 * seeing (and warning about) the sizes. */
static void overflowing_sizes(char *report, size_t capacity) {
    volatile size_t huge = SIZE_MAX - 100;
    volatile size_t half = SIZE_MAX / 2 + 1;
    report[0] = '\0';
    void *volatile small = malloc(16); /* volatile: realloc fails here, small stays valid */
    void *out = NULL;
    struct { const char *name; void *block; int err; } calls[9];
    int n = 0;
#define CALL(label, expression) do { errno = 0; void *b = (expression); calls[n].name = label; \
        calls[n].block = b; calls[n].err = errno; n++; } while (0)
    CALL("malloc", malloc(huge));
    CALL("calloc", calloc(half, 2));
    CALL("realloc", realloc(small, huge));
    CALL("reallocarray", reallocarray(small, half, 4));
    CALL("memalign", memalign(4096, huge));
    CALL("aligned_alloc", aligned_alloc(4096, huge));
    CALL("valloc", valloc(huge));
    CALL("pvalloc", pvalloc(huge));
    int rc = posix_memalign(&out, 64, huge);
    calls[n].name = "posix_memalign"; calls[n].block = out; calls[n].err = rc; n++;
#undef CALL
    for (int i = 0; i < n; i++) {
        if (calls[i].block != NULL || calls[i].err != ENOMEM) {
            size_t used = strlen(report);
            snprintf(report + used, capacity - used, "%s gave %p errno %d; ", calls[i].name,
                     calls[i].block, calls[i].err);
        }
    }
    free(small);
    if (report[0] == '\0') snprintf(report, capacity, "all NULL");
}

/* A fixed instant in the local time zone, with its name: tzset loads the zone the first time. */
static void libc_time(const CellaHost *host, CellaResponse *response) {
    time_t instant = 1700000000;
    struct tm local;
    char formatted[64];
    if (localtime_r(&instant, &local) == NULL ||
        strftime(formatted, sizeof formatted, "%Y-%m-%d %H:%M:%S %Z", &local) == 0) {
        text(host, response, 500, "localtime failed\n");
        return;
    }
    text(host, response, 200, formatted);
}

/* localhost's first IPv4 address through NSS (files, then dns). */
static void libc_resolve(const CellaHost *host, CellaResponse *response) {
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
    struct addrinfo *found = NULL;
    int rc = getaddrinfo("localhost", NULL, &hints, &found);
    if (rc != 0 || found == NULL) { text(host, response, 500, gai_strerror(rc)); return; }
    char address[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &((struct sockaddr_in *)found->ai_addr)->sin_addr, address, sizeof address);
    freeaddrinfo(found);
    text(host, response, 200, address);
}

/* Fills `fill` bytes of a fresh block, prints (stdout's buffer is malloc'ed at the first print),
 * and checks the block: a buffer left in an earlier request's arena would be written into it. */
static void libc_printf(const CellaHost *host, const CellaRequest *request, CellaResponse *response) {
    CellaStr query = host->request_query(request);
    size_t fill = 0;
    for (size_t i = starts_with(query, "fill=") ? 5 : query.len; i < query.len; i++) {
        fill = fill * 10 + (size_t)(query.ptr[i] - '0');
    }
    unsigned char *block = malloc(fill + 1);
    if (block == NULL) { text(host, response, 500, "malloc failed\n"); return; }
    memset(block, 0x5a, fill);
    for (int line = 0; line < 3; line++) printf("cella plugin stdout line %d of a request\n", line);
    fflush(stdout);
    for (size_t i = 0; i < fill; i++) {
        if (block[i] != 0x5a) { text(host, response, 500, "printf wrote into this request's memory\n"); return; }
    }
    free(block);
    text(host, response, 200, "intact");
}

static char overflow_in_init[512] = "not checked (build with -DAPP_OVERFLOW_IN_INIT)";

static void handle(const CellaHost *host, const CellaRequest *request, CellaResponse *response) {
    CellaStr method = host->request_method(request);
    CellaStr path = host->request_path(request);
    if (equals(method, "GET") && equals(path, "/")) {
        text(host, response, 200, "Hello, World!");
    } else if (equals(method, "POST") && equals(path, "/echo")) {
        CellaStr body = host->request_body(request);
        respond(host, response, 200, "application/octet-stream", body.ptr, body.len);
    } else if (equals(method, "GET") && starts_with(path, "/alloc/")) {
        alloc(host, response, path);
    } else if (equals(method, "GET") && equals(path, "/upstream")) {
        upstream(host, request, response);
    } else if (equals(method, "GET") && equals(path, "/greeting")) {
        text(host, response, 200, greeting);
    } else if (equals(method, "GET") && index_after(path, "/foreign/realloc/") >= 0) {
        foreign_realloc(host, response, index_after(path, "/foreign/realloc/"));
    } else if (equals(method, "GET") && index_after(path, "/foreign/free/") >= 0) {
        foreign_free(host, response, index_after(path, "/foreign/free/"));
    } else if (equals(method, "GET") && equals(path, "/overflow")) {
        char report[512];
        overflowing_sizes(report, sizeof report);
        text(host, response, 200, report);
    } else if (equals(method, "GET") && equals(path, "/libc/time")) {
        libc_time(host, response);
    } else if (equals(method, "GET") && equals(path, "/libc/resolve")) {
        libc_resolve(host, response);
    } else if (equals(method, "GET") && equals(path, "/libc/printf")) {
        libc_printf(host, request, response);
    } else if (equals(method, "GET") && equals(path, "/overflow/init")) {
        text(host, response, 200, overflow_in_init);
    } else {
        text(host, response, 404, "not found\n");
    }
}

/* Reads `greeting = "..."` from the [plugin] section; mallocs the blocks /foreign takes. */
static int init(const CellaHost *host, CellaStr config) {
    (void)host;
    for (long i = 0; i < FOREIGN_BLOCKS; i++) {
        foreign[i] = malloc(FOREIGN_BLOCK_BYTES);
        if (foreign[i] == NULL) return 1;
        memset(foreign[i], (unsigned char)i, FOREIGN_BLOCK_BYTES);
    }
#ifdef APP_OVERFLOW_IN_INIT
    overflowing_sizes(overflow_in_init, sizeof overflow_in_init);
#endif
    const char *key = "greeting = \"";
    size_t key_len = strlen(key);
    for (size_t i = 0; i + key_len < config.len; i++) {
        if (memcmp(config.ptr + i, key, key_len) == 0) {
            size_t start = i + key_len, end = start;
            while (end < config.len && config.ptr[end] != '"') end++;
            size_t n = end - start < sizeof greeting - 1 ? end - start : sizeof greeting - 1;
            memcpy(greeting, config.ptr + start, n);
            greeting[n] = '\0';
        }
    }
    return 0;
}

static const CellaPlugin PLUGIN = {
    .size = sizeof(CellaPlugin),
    .abi_version = APP_ABI_VERSION,
    .init = init,
    .deinit = NULL,
    .handle = handle,
};

#ifndef APP_NO_ENTRY
const CellaPlugin *cella_plugin_entry(void) { return &PLUGIN; }
#else
const CellaPlugin *not_the_entry(void) { return &PLUGIN; }
#endif
