// A fork-join pool for the layers of one inference call. Dispatch's concurrentPerform costs tens of
// microseconds per parallel region; an EfficientNet has a hundred regions per image. These workers
// spin briefly between regions (a region starts in about a microsecond), then sleep on a
// condition variable, so an idle model costs no CPU.
#include "cg_kernels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CGK_RELAX() _mm_pause()
#else
#define CGK_RELAX() ((void)0)
#endif

// Spin iterations before a worker sleeps (~50-100 us of pause instructions).
#define CGK_SPIN 20000

struct cgk_pool {
    int32_t workers;
    pthread_t *threads;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    _Atomic uint64_t generation;  // bumped once per region; workers run when it changes
    _Atomic int32_t pending;      // parts not yet finished in the current region
    _Atomic int32_t sleeping;
    _Atomic int32_t stop;
    // The current region, published before `generation` is bumped (release) and read after it is
    // seen (acquire).
    cgk_task task;
    void *context;
    int32_t parts;
};

typedef struct {
    cgk_pool *pool;
    int32_t index; // worker i runs part i + 1; the caller runs part 0
} cgk_worker_arg;

static void *cgk_worker(void *raw) {
    cgk_worker_arg arg = *(cgk_worker_arg *)raw;
    free(raw);
    cgk_pool *pool = arg.pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t generation;
        int spins = 0;
        while ((generation = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen) {
            if (atomic_load_explicit(&pool->stop, memory_order_acquire)) return NULL;
            if (++spins < CGK_SPIN) {
                CGK_RELAX();
                continue;
            }
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->sleeping, 1);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop)) pthread_cond_wait(&pool->wake, &pool->mutex);
            atomic_fetch_sub(&pool->sleeping, 1);
            pthread_mutex_unlock(&pool->mutex);
            spins = 0;
        }
        seen = generation;
        const int32_t part = arg.index + 1;
        if (part < pool->parts) {
            pool->task(pool->context, part);
            atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel);
        }
    }
}

cgk_pool *cgk_pool_create(int32_t workers) {
    cgk_pool *pool = calloc(1, sizeof(cgk_pool));
    if (pool == NULL) return NULL;
    pool->workers = workers > 0 ? workers : 0;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->threads = calloc((size_t)pool->workers + 1, sizeof(pthread_t));
    if (pool->threads == NULL) {
        free(pool);
        return NULL;
    }
    for (int32_t i = 0; i < pool->workers; i++) {
        cgk_worker_arg *arg = malloc(sizeof(cgk_worker_arg));
        if (arg == NULL || (arg->pool = pool, arg->index = i, pthread_create(&pool->threads[i], NULL, cgk_worker, arg)) != 0) {
            free(arg);
            pool->workers = i; // keep the threads that started
            break;
        }
    }
    return pool;
}

int32_t cgk_pool_workers(const cgk_pool *pool) { return pool ? pool->workers : 0; }

void cgk_pool_run(cgk_pool *pool, int32_t parts, cgk_task task, void *context) {
    if (parts > pool->workers + 1) parts = pool->workers + 1;
    if (parts <= 1) {
        task(context, 0);
        return;
    }
    pool->task = task;
    pool->context = context;
    pool->parts = parts;
    atomic_store_explicit(&pool->pending, parts - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    if (atomic_load(&pool->sleeping) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }
    task(context, 0);
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) > 0) CGK_RELAX();
}

void cgk_pool_destroy(cgk_pool *pool) {
    if (pool == NULL) return;
    atomic_store(&pool->stop, 1);
    pthread_mutex_lock(&pool->mutex);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int32_t i = 0; i < pool->workers; i++) pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->threads);
    free(pool);
}
