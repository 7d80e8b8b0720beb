/* why.c: why the last save of a key was refused, for the user to read
 * (user.etcdfs.error on the file, user.etcdfs.last_error on the mount
 * root): the same sentence the log got. A later successful save or delete
 * of the key clears it. At most WHY_MAX keys are remembered, the oldest
 * forgotten first, so a flood of refusals cannot grow memory. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "save_int.h"

#define WHY_MAX 256

struct save_why {
	char *key;
	size_t klen;
	char *msg;
	struct save_why *next; /* newest first */
};

static void why_free(struct save_why *w)
{
	free(w->key);
	free(w->msg);
	free(w);
}

/* Unlinks and returns key's entry, or NULL. why_lock held. */
static struct save_why *take(struct save *s, const char *key, size_t klen)
{
	for (struct save_why **pp = &s->why_head; *pp; pp = &(*pp)->next) {
		struct save_why *w = *pp;
		if (w->klen == klen && memcmp(w->key, key, klen) == 0) {
			*pp = w->next;
			s->n_why--;
			return w;
		}
	}
	return NULL;
}

/* Drops the oldest entry beyond WHY_MAX. why_lock held. */
static void trim(struct save *s)
{
	if (s->n_why <= WHY_MAX)
		return;
	struct save_why **pp = &s->why_head;
	while ((*pp)->next)
		pp = &(*pp)->next;
	why_free(*pp);
	*pp = NULL;
	s->n_why--;
}

static void record(struct save *s, const char *key, size_t klen, const char *msg)
{
	struct save_why *w = calloc(1, sizeof(*w));
	char *last = strdup(msg);
	if (w) {
		w->key = malloc(klen ? klen : 1);
		w->msg = strdup(msg);
		w->klen = klen;
	}
	pthread_mutex_lock(&s->why_lock);
	free(s->why_last);
	s->why_last = last;
	if (w && w->key && w->msg) {
		memcpy(w->key, key, klen);
		struct save_why *old = take(s, key, klen);
		if (old)
			why_free(old);
		w->next = s->why_head;
		s->why_head = w;
		s->n_why++;
		trim(s);
		w = NULL;
	}
	pthread_mutex_unlock(&s->why_lock);
	if (w) /* out of memory: the log still has it */
		why_free(w);
}

void save_refuse(struct save *s, const char *key, size_t klen, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_err("%s", msg);
	if (s)
		record(s, key, klen, msg);
}

void save_why_note(struct save *s, const char *msg)
{
	char *last = strdup(msg);
	pthread_mutex_lock(&s->why_lock);
	free(s->why_last);
	s->why_last = last;
	pthread_mutex_unlock(&s->why_lock);
}

void save_why_clear(struct save *s, const char *key, size_t klen)
{
	pthread_mutex_lock(&s->why_lock);
	struct save_why *w = take(s, key, klen);
	pthread_mutex_unlock(&s->why_lock);
	if (w)
		why_free(w);
}

/* A copy of msg, or -ENODATA (nothing recorded). */
static int copy_out(const char *msg, char **out)
{
	if (!msg)
		return -ENODATA;
	*out = strdup(msg);
	return *out ? 0 : -ENOMEM;
}

int save_why_get(struct save *s, const char *key, size_t klen, char **out)
{
	pthread_mutex_lock(&s->why_lock);
	const char *msg = NULL;
	for (struct save_why *w = s->why_head; w && !msg; w = w->next)
		if (w->klen == klen && memcmp(w->key, key, klen) == 0)
			msg = w->msg;
	int ret = copy_out(msg, out);
	pthread_mutex_unlock(&s->why_lock);
	return ret;
}

int save_why_last(struct save *s, char **out)
{
	pthread_mutex_lock(&s->why_lock);
	int ret = copy_out(s->why_last, out);
	pthread_mutex_unlock(&s->why_lock);
	return ret;
}

void save_why_destroy(struct save *s)
{
	while (s->why_head) {
		struct save_why *w = s->why_head;
		s->why_head = w->next;
		why_free(w);
	}
	free(s->why_last);
	s->why_last = NULL;
	s->n_why = 0;
}
