/* Spin locks and the file layout of the shared-memory table (fastgw/_core/_shm_c.pyx).
 *
 * The layout is documented in _shm_py.py (the reference twin); the structs below must match
 * it byte for byte (checked by the static asserts). A lock word is 0 when free, else the pid
 * of its holder (1: unknown). It is taken with an atomic compare-and-swap 0 -> pid and given
 * back with an atomic store of 0, the same protocol as the pure-Python twin. */
#ifndef FASTGW_SHM_LOCK_H
#define FASTGW_SHM_LOCK_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint32_t pid;
    uint32_t count;
} fgw_holder;

typedef struct {
    uint32_t lock;
    uint32_t kind;
    uint64_t h1;
    uint64_t h2;
    double value;
    double at;
    double cap;
    double rate;
    uint32_t overflow;
    uint32_t reserved;
    fgw_holder holders[8];
} fgw_entry;

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t ready;
    uint64_t entries;
    uint32_t entry_size;
    uint32_t global_lock;
    uint64_t used;
    uint32_t stats_lock;
    uint32_t pad[21];
} fgw_header;

_Static_assert(sizeof(fgw_entry) == 128, "entry layout");
_Static_assert(sizeof(fgw_header) == 128, "header layout");
_Static_assert(__builtin_offsetof(fgw_header, stats_lock) == 40, "header layout");
_Static_assert(__builtin_offsetof(fgw_entry, holders) == 64, "entry layout");

/* Seconds spent waiting on a lock before checking whether its holder died. */
#define FGW_STEAL_AFTER 0.2

static inline double fgw_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Whether process `pid` exists (0 and 1: assume so). */
static inline int fgw_alive(uint32_t pid) {
    if (pid <= 1) return 1;
    if (kill((pid_t)pid, 0) == 0) return 1;
    return errno != ESRCH;
}

static inline void fgw_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void fgw_lock(uint32_t *w, uint32_t me) {
    unsigned spins = 0;
    double since = 0.0;
    for (;;) {
        uint32_t cur = __atomic_load_n(w, __ATOMIC_RELAXED);
        if (cur == 0) {
            uint32_t expected = 0;
            if (__atomic_compare_exchange_n(w, &expected, me, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return;
            continue;
        }
        spins++;
        if (spins < 64) {
            fgw_pause();
            continue;
        }
        sched_yield();
        if ((spins & 255) == 0) {
            double t = fgw_monotonic();
            if (since == 0.0) {
                since = t;
            } else if (t - since > FGW_STEAL_AFTER && cur != me && !fgw_alive(cur)) {
                uint32_t expected = cur; /* its holder died: take it over */
                if (__atomic_compare_exchange_n(w, &expected, me, 0, __ATOMIC_ACQUIRE,
                                                __ATOMIC_RELAXED))
                    return;
            }
        }
    }
}

static inline void fgw_unlock(uint32_t *w) { __atomic_store_n(w, 0, __ATOMIC_RELEASE); }

#endif
