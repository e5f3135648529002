/* clock.h: elapsed time for progress lines, rates and checkpoint intervals. */
#ifndef CVAE_CLOCK_H
#define CVAE_CLOCK_H

/* Seconds on the monotonic clock (from an arbitrary start: for differences only). */
double cv_now_seconds(void);

#endif
