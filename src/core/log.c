/* log.c: stderr/syslog/file logging with levels (see log.h). */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int max_level = LOG_INFO;
static int to_syslog;
static int to_stderr = 1;
static int stderr_level = LOG_DEBUG;
static unsigned long n_errors;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
/* the log file, protected by log_lock */
static int file_fd = -1;
static char *file_path;
static size_t file_max, file_size;

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

void log_use_stderr(int enable)
{
	to_stderr = enable;
}

void log_set_stderr_level(int level)
{
	stderr_level = level;
}

/* Opens file_path for appending, owner-only. Lock held (or no threads). */
static int open_file(void)
{
	int fd = open(file_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	struct stat st;
	/* An existing file keeps its mode on open: make it private too. */
	if (fchmod(fd, 0600) < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	file_fd = fd;
	file_size = (size_t)st.st_size;
	return 0;
}

int log_use_file(const char *path, size_t max_bytes)
{
	char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	pthread_mutex_lock(&log_lock);
	if (file_fd >= 0)
		close(file_fd);
	file_fd = -1;
	free(file_path);
	file_path = p;
	file_max = max_bytes;
	int ret = open_file();
	if (ret < 0) {
		free(file_path);
		file_path = NULL;
	}
	pthread_mutex_unlock(&log_lock);
	return ret;
}

const char *log_file_path(void)
{
	return file_path;
}

/* Starts a new file once this one is full; path.1 keeps the last one. On
 * failure logging goes on in the full file rather than stop. Lock held. */
static void rotate(void)
{
	size_t n = strlen(file_path);
	char *old = malloc(n + 3);
	if (!old)
		return;
	memcpy(old, file_path, n);
	memcpy(old + n, ".1", 3);
	if (rename(file_path, old) == 0) {
		close(file_fd);
		file_fd = -1;
		if (open_file() < 0)
			file_fd = open(old, O_WRONLY | O_APPEND | O_CLOEXEC);
	}
	free(old);
}

static void write_file(const char *line, size_t len)
{
	if (file_fd < 0)
		return;
	if (file_max && file_size + len > file_max && file_size > 0)
		rotate();
	if (file_fd < 0)
		return;
	ssize_t w = write(file_fd, line, len);
	if (w > 0)
		file_size += (size_t)w;
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
		va_list ap2;
		va_copy(ap2, ap);
		vsyslog(level, fmt, ap2);
		va_end(ap2);
	}
	bool on_stderr = to_stderr && level <= stderr_level;
	if (!on_stderr && file_fd < 0)
		return; /* read without the lock: set up before any thread */
	char buf[4096];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = 0;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	localtime_r(&tv.tv_sec, &tm);
	char line[4200];
	int len = snprintf(line, sizeof(line), "etcdfs: %02d:%02d:%02d.%03ld %s: %s\n", tm.tm_hour,
			   tm.tm_min, tm.tm_sec, (long)tv.tv_usec / 1000, level_names[level & 7],
			   buf);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(line))
		len = sizeof(line) - 1;
	/* One write per line under a lock keeps lines from interleaving. */
	pthread_mutex_lock(&log_lock);
	if (on_stderr) {
		fputs(line, stderr);
		fflush(stderr);
	}
	write_file(line, (size_t)len);
	pthread_mutex_unlock(&log_lock);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}
