/*
 * The probes of ringbuf_tp.h and the loops the `vs_lttng` bench times. The loops
 * are here, in C, so that each event is a tracepoint at its call site, as in an
 * instrumented C program: no foreign-function call per event.
 */
#define LTTNG_UST_TRACEPOINT_CREATE_PROBES
#define LTTNG_UST_TRACEPOINT_DEFINE
#include "ringbuf_tp.h"

/* `n` events `ringbuf_bench:event` with a = first + i, b = (uint32_t) a. */
void ringbuf_lttng_events(uint64_t first, uint64_t n)
{
    for (uint64_t a = first; a != first + n; a++)
        lttng_ust_tracepoint(ringbuf_bench, event, a, (uint32_t) a);
}

/* The same with `ringbuf_bench:event_off`. */
void ringbuf_lttng_events_off(uint64_t first, uint64_t n)
{
    for (uint64_t a = first; a != first + n; a++)
        lttng_ust_tracepoint(ringbuf_bench, event_off, a, (uint32_t) a);
}

/* Whether a session enabled `ringbuf_bench:event` (1) or not (0). */
int ringbuf_lttng_enabled(void)
{
    return lttng_ust_tracepoint_enabled(ringbuf_bench, event) != 0;
}

/* Whether a session enabled `ringbuf_bench:event_off` (1) or not (0). */
int ringbuf_lttng_off_enabled(void)
{
    return lttng_ust_tracepoint_enabled(ringbuf_bench, event_off) != 0;
}
