/* log.c: stderr/syslog logging with levels (see log.h). */
#include "core/log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int max_level = LOG_INFO;
static int to_syslog;
static unsigned long n_errors;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
	"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
};

void log_set_level(int level)
{
	max_level = level;
}

int log_get_level(void)
{
	return max_level;
}

void log_use_syslog(int enable)
{
	to_syslog = enable;
	if (enable)
		openlog("etcdfs", LOG_PID, LOG_DAEMON);
}

unsigned long log_error_count(void)
{
	return __atomic_load_n(&n_errors, __ATOMIC_RELAXED);
}

void log_vmsg(int level, const char *fmt, va_list ap)
{
	if (level <= LOG_ERR)
		__atomic_add_fetch(&n_errors, 1, __ATOMIC_RELAXED);
	if (level > max_level)
		return;
	if (to_syslog) {
		vsyslog(level, fmt, ap);
		return;
	}
	char buf[4096];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = 0;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	localtime_r(&tv.tv_sec, &tm);
	/* One fprintf under a lock keeps lines from interleaving. */
	pthread_mutex_lock(&log_lock);
	fprintf(stderr, "etcdfs: %02d:%02d:%02d.%03ld %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
		(long)tv.tv_usec / 1000, level_names[level & 7], buf);
	fflush(stderr);
	pthread_mutex_unlock(&log_lock);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}
