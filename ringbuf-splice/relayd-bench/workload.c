/* `ringbuf record`'s workload traced with lttng-ust, to compare LTTng's own
 * consumer with ringbuf's on the same relayd (run.sh): writer threads paced at
 * a rate each, as `record` paces them (a clock reading per event, sleeps of at
 * most 10 ms), events of the same fields (seq u64, thread u32, 16 payload bytes).
 *
 *   workload THREADS RATE_PER_THREAD SECONDS   ->   "attempted N events in S s"
 */
#include "workload-tp.h"
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double rate, duration;
static struct timespec start;

static double elapsed(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
}

static void *writer(void *arg)
{
	uint32_t thread = (uint32_t)(uintptr_t)arg;
	uint8_t payload[16];
	uint64_t seq = 0;

	memset(payload, (int)thread, sizeof(payload));
	for (;;) {
		double now = elapsed(), due = seq / rate;

		if (now >= duration)
			break;
		if (due > now) {
			double wait = due - now < 0.01 ? due - now : 0.01;
			struct timespec ts = { 0, (long)(wait * 1e9) };

			nanosleep(&ts, NULL);
			continue;
		}
		tracepoint(ringbuf_bench, event, seq, thread, payload, sizeof(payload));
		seq++;
	}
	return (void *)(uintptr_t)seq;
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : 2;
	pthread_t t[64];
	uint64_t total = 0;

	rate = argc > 2 ? atof(argv[2]) : 100000;
	duration = argc > 3 ? atof(argv[3]) : 3;
	if (threads < 1 || threads > 64 || rate <= 0 || duration <= 0) {
		fprintf(stderr, "usage: workload THREADS(1-64) RATE SECONDS\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, writer, (void *)(uintptr_t)i);
	for (int i = 0; i < threads; i++) {
		void *n;

		pthread_join(t[i], &n);
		total += (uint64_t)(uintptr_t)n;
	}
	printf("attempted %llu events in %.3f s\n", (unsigned long long)total, elapsed());
	return 0;
}
