/*
 * LTTng-UST 2.13 tracepoint provider `ringbuf_bench`: the event ringbuf's
 * `vs_lttng` bench writes, `{u64 a; u32 b}`, twice under two names so that one
 * can be enabled in the session and the other left disabled in the same process.
 * Built by benches/build.rs (with ringbuf_tp.c) when liblttng-ust is installed.
 */
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER ringbuf_bench

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "ringbuf_tp.h"

#if !defined(RINGBUF_TP_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define RINGBUF_TP_H

#include <stdint.h>
#include <lttng/tracepoint.h>

/* Enabled by benches/lttng/run.sh: the "enabled" row. */
LTTNG_UST_TRACEPOINT_EVENT(
    ringbuf_bench,
    event,
    LTTNG_UST_TP_ARGS(uint64_t, a, uint32_t, b),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_integer(uint64_t, a, a)
        lttng_ust_field_integer(uint32_t, b, b)
    )
)

/* The same event, never enabled: the "disabled" row (the cost when no session
 * listens). */
LTTNG_UST_TRACEPOINT_EVENT(
    ringbuf_bench,
    event_off,
    LTTNG_UST_TP_ARGS(uint64_t, a, uint32_t, b),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_integer(uint64_t, a, a)
        lttng_ust_field_integer(uint32_t, b, b)
    )
)

#endif /* RINGBUF_TP_H */

#include <lttng/tracepoint-event.h>
