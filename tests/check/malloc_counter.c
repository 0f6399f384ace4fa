/*
 * LD_PRELOAD malloc counter for tests/check/no-alloc-after-startup.sh.
 *
 * Counts every malloc-family call. SIGUSR1 marks the start of the window (after the server's
 * ready line), SIGUSR2 its end: the handler then writes one line to stderr,
 * "malloc-counter: N calls in window", using only async-signal-safe calls.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static atomic_ulong calls;
static atomic_ulong window_start;

void *malloc(size_t size) { atomic_fetch_add(&calls, 1); return __libc_malloc(size); }
void *calloc(size_t n, size_t size) { atomic_fetch_add(&calls, 1); return __libc_calloc(n, size); }
void *realloc(void *p, size_t size) { atomic_fetch_add(&calls, 1); return __libc_realloc(p, size); }
void free(void *p) { if (p) atomic_fetch_add(&calls, 1); __libc_free(p); }
void *memalign(size_t align, size_t size) { atomic_fetch_add(&calls, 1); return __libc_memalign(align, size); }
void *aligned_alloc(size_t align, size_t size) { atomic_fetch_add(&calls, 1); return __libc_memalign(align, size); }
int posix_memalign(void **out, size_t align, size_t size) {
    atomic_fetch_add(&calls, 1);
    void *p = __libc_memalign(align, size);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}

static void on_mark_start(int sig) { (void)sig; atomic_store(&window_start, atomic_load(&calls)); }

static void on_mark_end(int sig) {
    (void)sig;
    unsigned long n = atomic_load(&calls) - atomic_load(&window_start);
    char line[64] = "malloc-counter: ";
    char digits[24];
    int len = 0;
    do { digits[len++] = (char)('0' + n % 10); n /= 10; } while (n);
    size_t at = strlen(line);
    while (len) line[at++] = digits[--len];
    const char *tail = " calls in window\n";
    for (size_t i = 0; tail[i]; i++) line[at++] = tail[i];
    write(2, line, at);
}

__attribute__((constructor)) static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_mark_start;
    sigaction(SIGUSR1, &action, NULL);
    action.sa_handler = on_mark_end;
    sigaction(SIGUSR2, &action, NULL);
}
