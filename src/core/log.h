/* log.h: the one logging facility, with syslog levels.
 *
 * Messages go to stderr (foreground), to syslog (daemonized, when the
 * machine has a syslog socket) or to a file (--log-file, or daemonized
 * without syslog), never nowhere. libfuse's own
 * log is routed here (fs/ installs the hook), so all output has one format.
 * Thread-safe. Never log secrets: this module does no filtering, so a caller
 * never formats a password, token or key into a message (the etcd client logs
 * the user name and the endpoint, never the credential).
 */
#ifndef ETCDFS_LOG_H
#define ETCDFS_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <syslog.h>

/* Messages above this level (numerically) are dropped. Default LOG_INFO. */
void log_set_level(int level);
int log_get_level(void);
/* Also route output to syslog (default off). */
void log_use_syslog(int enable);
/* Also (or, after log_use_stderr(0), only) writes to path, created 0600
 * since messages may name Secret keys (never values). When the file
 * reaches max_bytes it is renamed to path.1 (replacing the older one) and
 * a new file started: one rotation, at most twice max_bytes on disk. The
 * path is copied. 0 or -errno (the file could not be opened). */
int log_use_file(const char *path, size_t max_bytes);
/* Whether messages also go to stderr (default 1; a daemon turns it off
 * once it detaches), and the least severe level that does (default all:
 * a daemonizing mount shows only problems on the terminal). */
void log_use_stderr(int enable);
void log_set_stderr_level(int level);
/* The file log_use_file() set, or NULL. */
const char *log_file_path(void);
/* Count of messages logged at LOG_ERR or more severe; tests read it. */
unsigned long log_error_count(void);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *fmt, va_list ap);

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
