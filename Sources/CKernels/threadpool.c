// The scheduler of one loaded model: `workers` threads shared by every call into that model.
//
// Why this shape:
// - Dispatch's concurrentPerform costs tens of microseconds per parallel region, and an
//   EfficientNet runs a hundred regions per image, so regions start on threads we own.
// - Many threads may call one model at once (a web server's request pool). Threads must not
//   multiply with callers, so the workers belong to the model, not to a call or a context.
// - A region's parts are claimed one at a time from a counter in the region itself. The caller
//   recruits only the workers that are idle now and runs every part nobody else took; when calls
//   overlap they share the workers, and with as many callers as threads each runs alone at full
//   speed instead of waiting for a busy worker.
//
// The protocol (every transition is one compare-and-swap on the worker's state word):
//   IDLE/SLEEPING --caller--> CLAIMED --caller--> ASSIGNED --worker--> RUNNING --worker--> IDLE
//                                                 ASSIGNED --caller (revoke)--> IDLE
// The caller writes the region pointer while it holds the worker in CLAIMED and publishes it with
// the release store of ASSIGNED; the worker reads it only after its acquire CAS to RUNNING, so it
// always sees one consistent region (task, context, part count). The state word carries a ticket
// that changes with every claim, so a caller revoking "its" assignment can never revoke a later
// assignment of the same worker by another caller (no ABA). After running its own parts the
// caller revokes every assignment not yet taken; the workers that did take one are exactly those
// it must wait for, and each of them reports once, through an atomic add that returns whether the
// caller sleeps, touching nothing of the region afterwards.
//
// Waiting: an idle worker spins for a few tens of microseconds (the next region of the same call
// usually comes that soon) and only while calls are in progress that could use it, then sleeps on
// a futex; a caller waiting for a part a worker holds spins for a bounded time, then sleeps. An
// idle model uses no CPU, and no thread spins long for a descheduled one.
#include "cg_kernels.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#define CGK_RELAX() _mm_pause()
#else
#define CGK_RELAX() ((void)0)
#endif

// Test-only (-DCGK_POOL_TEST_YIELD): give up the CPU at the protocol's windows, so that a stress
// test on two cores sees the interleavings a many-core machine produces.
#if defined(CGK_POOL_TEST_YIELD)
#define CGK_WINDOW() sched_yield()
#else
#define CGK_WINDOW() ((void)0)
#endif

// Pause iterations an idle worker waits for new work before it sleeps, and a caller waits for a
// worker's part before it sleeps (a pause is 10-140 cycles depending on the core: 5-100 us).
#define CGK_IDLE_SPIN 4000
#define CGK_WAIT_SPIN 4000

enum { CGK_IDLE = 0, CGK_SLEEPING = 1, CGK_CLAIMED = 2, CGK_ASSIGNED = 3, CGK_RUNNING = 4, CGK_STOP = 5 };
#define CGK_KIND(word) ((word) & 7u)
#define CGK_TICKET(word) ((word) & ~7u)
#define CGK_NEXT_TICKET(word) (CGK_TICKET(word) + 8u)

// One parallel region, on the caller's stack for the duration of cgk_pool_run.
typedef struct {
    cgk_task task;
    void *context;
    int32_t parts;
    _Atomic int32_t next;       // the next unclaimed part
    _Atomic uint32_t finished;  // workers done with this region; CGK_CALLER_SLEEPS when the caller sleeps
} cgk_region;
#define CGK_CALLER_SLEEPS 0x80000000u

typedef struct {
    _Alignas(64) _Atomic uint32_t state;  // kind | ticket; the futex the worker sleeps on
    cgk_region *region;                   // valid while ASSIGNED or RUNNING
    pthread_t thread;
    struct cgk_pool *pool;
} cgk_worker;

struct cgk_pool {
    int32_t workers;   // threads that started (written once they all have: callers read it)
    int32_t planned;   // threads asked for (written before any starts: workers read it)
    cgk_worker *slots;
    _Atomic int32_t callers;  // calls between cgk_pool_enter and cgk_pool_leave
};

static void cgk_futex_wait(_Atomic uint32_t *word, uint32_t expected) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
#else
    (void)word, (void)expected;
    sched_yield();
#endif
}

static void cgk_futex_wake(_Atomic uint32_t *word) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
#else
    (void)word;
#endif
}

static void cgk_run_parts(cgk_region *region) {
    for (;;) {
        int32_t part = atomic_fetch_add_explicit(&region->next, 1, memory_order_relaxed);
        if (part >= region->parts) return;
        region->task(region->context, part);
    }
}

// True while a call in progress could recruit one more worker: spinning is then worth its cost.
static int cgk_worth_spinning(struct cgk_pool *pool) {
    int32_t callers = atomic_load_explicit(&pool->callers, memory_order_relaxed);
    return callers > 0 && callers <= pool->planned;
}

static void *cgk_worker_main(void *raw) {
    cgk_worker *self = raw;
    int spins = 0;
    for (;;) {
        uint32_t word = atomic_load_explicit(&self->state, memory_order_acquire);
        switch (CGK_KIND(word)) {
        case CGK_STOP:
            return NULL;
        case CGK_ASSIGNED: {
            CGK_WINDOW();
            uint32_t running = CGK_TICKET(word) | CGK_RUNNING;
            if (!atomic_compare_exchange_strong_explicit(&self->state, &word, running, memory_order_acquire,
                                                         memory_order_relaxed))
                continue;  // revoked by the caller, or stopped
            cgk_region *region = self->region;
            cgk_run_parts(region);
            // Idle again before reporting: another call may recruit this worker at once.
            atomic_store_explicit(&self->state, CGK_TICKET(word) | CGK_IDLE, memory_order_release);
            CGK_WINDOW();
            uint32_t before = atomic_fetch_add_explicit(&region->finished, 1, memory_order_acq_rel);
            // `region` may be gone now; its address is only a futex key.
            if (before & CGK_CALLER_SLEEPS) cgk_futex_wake(&region->finished);
            spins = 0;
            break;
        }
        case CGK_IDLE:
            if (spins < CGK_IDLE_SPIN && cgk_worth_spinning(self->pool)) {
                spins++;
                CGK_RELAX();
                break;
            }
            if (atomic_compare_exchange_strong_explicit(&self->state, &word, CGK_TICKET(word) | CGK_SLEEPING,
                                                        memory_order_relaxed, memory_order_relaxed))
                cgk_futex_wait(&self->state, CGK_TICKET(word) | CGK_SLEEPING);
            spins = 0;
            break;
        case CGK_SLEEPING:  // a spurious wake-up
            cgk_futex_wait(&self->state, word);
            break;
        default:  // CLAIMED: a caller is writing the region; ASSIGNED follows two stores later
            if (++spins < CGK_IDLE_SPIN) CGK_RELAX();
            else sched_yield();  // that caller was descheduled in between: let it run
            break;
        }
    }
}

cgk_pool *cgk_pool_create(int32_t workers) {
    cgk_pool *pool = calloc(1, sizeof(cgk_pool));
    if (pool == NULL) return NULL;
    workers = workers > 0 ? workers : 0;
    if (workers > 0) {
        pool->slots = aligned_alloc(64, sizeof(cgk_worker) * (size_t)workers);
        if (pool->slots == NULL) workers = 0;
    }
    pool->planned = workers;
    for (int32_t i = 0; i < workers; i++) {
        cgk_worker *w = &pool->slots[i];
        memset(w, 0, sizeof *w);
        w->pool = pool;
        atomic_init(&w->state, CGK_IDLE);
        if (pthread_create(&w->thread, NULL, cgk_worker_main, w) != 0) {
            workers = i;  // keep the threads that started
            break;
        }
    }
    pool->workers = workers;
    return pool;
}

int32_t cgk_pool_workers(const cgk_pool *pool) { return pool ? pool->workers : 0; }

void cgk_pool_enter(cgk_pool *pool) { atomic_fetch_add_explicit(&pool->callers, 1, memory_order_relaxed); }
void cgk_pool_leave(cgk_pool *pool) { atomic_fetch_sub_explicit(&pool->callers, 1, memory_order_relaxed); }

void cgk_pool_run(cgk_pool *pool, int32_t parts, int32_t max_threads, cgk_task task, void *context) {
    // Workers to ask for: no more than the parts, the caller's limit and the threads left over by
    // other calls in progress (each caller is a running thread too).
    int32_t want = parts - 1;
    if (max_threads - 1 < want) want = max_threads - 1;
    if (pool != NULL) {
        int32_t callers = atomic_load_explicit(&pool->callers, memory_order_relaxed);
        int32_t spare = pool->workers + 1 - (callers > 0 ? callers : 1);
        if (spare < want) want = spare;
    }
    if (pool == NULL || want <= 0) {
        for (int32_t part = 0; part < parts; part++) task(context, part);
        return;
    }
    cgk_region region = {.task = task, .context = context, .parts = parts};
    atomic_init(&region.next, 0);
    atomic_init(&region.finished, 0);

    int32_t recruited[want];
    uint32_t tickets[want];
    int32_t count = 0;
    for (int32_t i = 0; i < pool->workers && count < want; i++) {
        cgk_worker *w = &pool->slots[i];
        uint32_t word = atomic_load_explicit(&w->state, memory_order_relaxed);
        uint32_t kind = CGK_KIND(word);
        if (kind != CGK_IDLE && kind != CGK_SLEEPING) continue;
        uint32_t ticket = CGK_NEXT_TICKET(word);
        if (!atomic_compare_exchange_strong_explicit(&w->state, &word, ticket | CGK_CLAIMED, memory_order_acquire,
                                                     memory_order_relaxed))
            continue;  // another caller took it
        w->region = &region;
        atomic_store_explicit(&w->state, ticket | CGK_ASSIGNED, memory_order_release);
        if (kind == CGK_SLEEPING) cgk_futex_wake(&w->state);
        recruited[count] = i;
        tickets[count] = ticket;
        count++;
    }

    cgk_run_parts(&region);

    // Every part is claimed. Take back the assignments no worker has taken yet; the rest ran or
    // are running parts, and report when done.
    uint32_t joined = 0;
    for (int32_t k = 0; k < count; k++) {
        cgk_worker *w = &pool->slots[recruited[k]];
        uint32_t expected = tickets[k] | CGK_ASSIGNED;
        CGK_WINDOW();
        if (!atomic_compare_exchange_strong_explicit(&w->state, &expected, tickets[k] | CGK_IDLE, memory_order_relaxed,
                                                     memory_order_relaxed))
            joined++;
    }
    int spins = 0;
    for (;;) {
        uint32_t seen = atomic_load_explicit(&region.finished, memory_order_acquire);
        if ((seen & ~CGK_CALLER_SLEEPS) >= joined) break;
        if (spins < CGK_WAIT_SPIN) {
            spins++;
            CGK_RELAX();
            continue;
        }
        seen = atomic_fetch_or_explicit(&region.finished, CGK_CALLER_SLEEPS, memory_order_acq_rel) | CGK_CALLER_SLEEPS;
        if ((seen & ~CGK_CALLER_SLEEPS) >= joined) break;
        cgk_futex_wait(&region.finished, seen);
    }
}

void cgk_pool_destroy(cgk_pool *pool) {
    if (pool == NULL) return;
    for (int32_t i = 0; i < pool->workers; i++) {
        atomic_store_explicit(&pool->slots[i].state, CGK_STOP, memory_order_release);
        cgk_futex_wake(&pool->slots[i].state);
    }
    for (int32_t i = 0; i < pool->workers; i++) pthread_join(pool->slots[i].thread, NULL);
    free(pool->slots);
    free(pool);
}
