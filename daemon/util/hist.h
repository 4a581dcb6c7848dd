/*
 * daemon/util/hist.h: a fixed-bucket latency histogram in milliseconds, the shape Prometheus
 * histograms take (cumulative buckets with upper bounds, a sum, a count), for `stats`
 * (docs/OPERATIONS.md). Plain data: no allocation, copy it to take a snapshot.
 *
 *   struct dsd_hist h = {0};
 *   dsd_hist_add(&h, 12.5);                       // one observation, in ms
 *   for (int i = 0; i <= DSD_HIST_BOUNDS; i++)    // the last bucket is +Inf
 *       printf("le %g: %llu\n", dsd_hist_bound_ms(i), dsd_hist_cumulative(&h, i));
 */
#ifndef DSD_UTIL_HIST_H
#define DSD_UTIL_HIST_H

#include <math.h>
#include <stdint.h>

#define DSD_HIST_BOUNDS 14      /* finite upper bounds; bucket DSD_HIST_BOUNDS is +Inf */

struct dsd_hist {
    uint64_t bucket[DSD_HIST_BOUNDS + 1];   /* observations per bucket (not cumulative) */
    uint64_t count;
    double sum_ms;
};

/* The upper bound of bucket i in ms (INFINITY for the last). */
static inline double dsd_hist_bound_ms(int i)
{
    static const double b[DSD_HIST_BOUNDS] = { 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 };
    return i >= 0 && i < DSD_HIST_BOUNDS ? b[i] : INFINITY;
}

static inline void dsd_hist_add(struct dsd_hist *h, double ms)
{
    int i = 0;
    while (i < DSD_HIST_BOUNDS && ms > dsd_hist_bound_ms(i))
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum_ms += ms;
}

/* Adds every observation of b to a. */
static inline void dsd_hist_merge(struct dsd_hist *a, const struct dsd_hist *b)
{
    for (int i = 0; i <= DSD_HIST_BOUNDS; i++)
        a->bucket[i] += b->bucket[i];
    a->count += b->count;
    a->sum_ms += b->sum_ms;
}

/* Observations <= bound i (Prometheus's le buckets). */
static inline uint64_t dsd_hist_cumulative(const struct dsd_hist *h, int i)
{
    uint64_t n = 0;
    for (int k = 0; k <= i && k <= DSD_HIST_BOUNDS; k++)
        n += h->bucket[k];
    return n;
}

#endif
