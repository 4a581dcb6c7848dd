/*
 * daemon/util/deadline.h: the absolute CLOCK_REALTIME time ms milliseconds from now, what
 * pthread_cond_timedwait wants (condition variables with the default clock).
 *
 *   struct timespec ts = dsd_deadline_ms(20);
 *   while (!ready && pthread_cond_timedwait(&cv, &mu, &ts) != ETIMEDOUT) ...
 */
#ifndef DSD_UTIL_DEADLINE_H
#define DSD_UTIL_DEADLINE_H

#include <time.h>

static inline struct timespec dsd_deadline_ms(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

#endif
