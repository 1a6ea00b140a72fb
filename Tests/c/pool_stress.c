/* pool_stress.c - the model scheduler's region protocol under stress (Sources/CKernels/threadpool.c).
 *
 *   pool_stress WORKERS REGIONS CALLERS
 *
 * Tests/c/run.sh compiles threadpool.c into this program with -DCGK_POOL_TEST_YIELD, which gives up
 * the CPU at the protocol's windows (after a worker reads an assignment, before it reports, before
 * a caller revokes), so that two cores see the interleavings of a many-core machine. CALLERS
 * threads share one pool of WORKERS workers and run REGIONS regions in all, with part counts that
 * vary from region to region (1 to 2 * WORKERS + 2). Every region checks, after cgk_pool_run
 * returns, that each of its parts ran exactly once and that none is still running; a part that
 * runs after its region returned finds the region's record marked dead. Exit status 1 on any
 * violation, with counts.
 */
#include "cg_kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_PARTS 64
#define ALIVE 0x5eed
#define DEAD 0xdead

typedef struct {
    _Atomic int alive;
    _Atomic int running;
    _Atomic int ran[MAX_PARTS];
} region_record;

static _Atomic long late_parts, double_runs, missing_runs, early_returns, regions_done;

static void task(void *raw, int32_t part) {
    region_record *r = raw;
    if (atomic_load(&r->alive) != ALIVE) atomic_fetch_add(&late_parts, 1);
    atomic_fetch_add(&r->running, 1);
    if (part % 3 == 1) sched_yield(); /* parts of uneven length */
    atomic_fetch_add(&r->ran[part], 1);
    atomic_fetch_sub(&r->running, 1);
}

typedef struct {
    cgk_pool *pool;
    int workers;
    long regions;
    unsigned seed;
} caller_args;

static void *caller(void *raw) {
    caller_args *a = raw;
    unsigned state = a->seed;
    for (long i = 0; i < a->regions; i++) {
        cgk_pool_enter(a->pool);
        state = state * 1103515245u + 12345u;
        int parts = 1 + (int)((state >> 16) % (unsigned)(2 * a->workers + 2));
        if (parts > MAX_PARTS) parts = MAX_PARTS;
        /* Alternate wide and narrow regions: the pattern that exposed the old pool's race. */
        if (i % 2) parts = 1 + parts % 3;
        int max_threads = (i % 5 == 0) ? 2 : a->workers + 1;
        region_record *r = malloc(sizeof *r);
        atomic_init(&r->alive, ALIVE);
        atomic_init(&r->running, 0);
        for (int p = 0; p < MAX_PARTS; p++) atomic_init(&r->ran[p], 0);
        cgk_pool_run(a->pool, parts, max_threads, task, r);
        if (atomic_load(&r->running) != 0) atomic_fetch_add(&early_returns, 1);
        for (int p = 0; p < MAX_PARTS; p++) {
            int n = atomic_load(&r->ran[p]);
            if (p < parts && n == 0) atomic_fetch_add(&missing_runs, 1);
            if (n > 1 || (p >= parts && n > 0)) atomic_fetch_add(&double_runs, 1);
        }
        atomic_store(&r->alive, DEAD);
        /* Kept (not freed) until the end, so a late part reads DEAD rather than freed memory. */
        cgk_pool_leave(a->pool);
        atomic_fetch_add(&regions_done, 1);
        static _Atomic(region_record *) graveyard[1 << 16];
        region_record *old = atomic_exchange(&graveyard[(state >> 8) & 0xffff], r);
        free(old);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: pool_stress WORKERS REGIONS CALLERS\n");
        return 2;
    }
    int workers = atoi(argv[1]), callers = atoi(argv[3]);
    long regions = atol(argv[2]);
    if (workers < 1 || callers < 1 || regions < callers) return 2;
    cgk_pool *pool = cgk_pool_create(workers);
    if (pool == NULL || cgk_pool_workers(pool) != workers) {
        fprintf(stderr, "could not start %d workers\n", workers);
        return 1;
    }
    pthread_t threads[callers];
    caller_args args[callers];
    for (int c = 0; c < callers; c++) {
        args[c] = (caller_args){pool, workers, regions / callers, 17u + 31u * (unsigned)c};
        pthread_create(&threads[c], NULL, caller, &args[c]);
    }
    for (int c = 0; c < callers; c++) pthread_join(threads[c], NULL);
    cgk_pool_destroy(pool);
    long bad = late_parts + double_runs + missing_runs + early_returns;
    printf("pool stress: %d workers, %d callers, %ld regions: %ld parts run twice, %ld never run, "
           "%ld early returns, %ld parts after return\n",
           workers, callers, (long)regions_done, (long)double_runs, (long)missing_runs, (long)early_returns,
           (long)late_parts);
    return bad == 0 && regions_done == (regions / callers) * callers ? 0 : 1;
}
