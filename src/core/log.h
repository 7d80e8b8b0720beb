/* log.h: the one logging facility, with syslog levels.
 *
 * Messages go to stderr (foreground) or syslog (daemonized). libfuse's own
 * log is routed here (fs/ installs the hook), so all output has one format.
 * Thread-safe. Never log secrets: this module does no filtering, so a caller
 * never formats a password, token or key into a message (the etcd client logs
 * the user name and the endpoint, never the credential).
 */
#ifndef ETCDFS_LOG_H
#define ETCDFS_LOG_H

#include <stdarg.h>
#include <syslog.h>

/* Messages above this level (numerically) are dropped. Default LOG_INFO. */
void log_set_level(int level);
int log_get_level(void);
/* Route output to syslog (true) or stderr (false, the default). */
void log_use_syslog(int enable);
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
