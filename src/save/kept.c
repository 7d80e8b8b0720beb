/* kept.c: the conflict directory stays bounded. Every refused save leaves a
 * copy there for the user; without a bound one busy mount left thousands.
 * The rule (docs/writes.md): at most SAVE_KEPT_MAX copies, none older than
 * SAVE_KEPT_DAYS; the oldest go first, each with its PATH.why. Only files
 * named as keep_rejected names them are touched, so a directory shared with
 * anything else loses nothing else. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "save_int.h"

struct kept {
	char *name;
	time_t mtime;
};

/* A copy keep_rejected wrote: NAME.SECONDS.NANOSECONDS (9 digits). */
static bool is_copy(const char *name)
{
	size_t n = strlen(name);
	if (n < 12 || name[n - 10] != '.')
		return false;
	for (size_t i = n - 9; i < n; i++)
		if (name[i] < '0' || name[i] > '9')
			return false;
	return true;
}

static int by_age(const void *a, const void *b)
{
	const struct kept *x = a, *y = b;
	if (x->mtime != y->mtime)
		return x->mtime < y->mtime ? -1 : 1;
	return strcmp(x->name, y->name);
}

static void remove_copy(const char *dir, const char *name)
{
	char p[1024];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	unlink(p);
	snprintf(p, sizeof(p), "%s/%s.why", dir, name);
	unlink(p);
}

/* Lists the copies in dir into *out (caller frees). -errno. */
static int list_copies(const char *dir, struct kept **out, size_t *n_out)
{
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct kept *v = NULL;
	size_t n = 0, cap = 0;
	int ret = 0;
	for (struct dirent *e; (e = readdir(d));) {
		struct stat st;
		if (!is_copy(e->d_name) || fstatat(dirfd(d), e->d_name, &st, 0) < 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			struct kept *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				ret = -ENOMEM;
				break;
			}
			v = nv;
		}
		v[n].name = strdup(e->d_name);
		if (!v[n].name) {
			ret = -ENOMEM;
			break;
		}
		v[n++].mtime = st.st_mtime;
	}
	closedir(d);
	*out = v;
	*n_out = n;
	return ret;
}

void save_prune_kept(struct save *s, const char *dir)
{
	(void)s;
	struct kept *v = NULL;
	size_t n = 0;
	if (list_copies(dir, &v, &n) == 0 && n) {
		qsort(v, n, sizeof(*v), by_age);
		time_t cutoff = time(NULL) - (time_t)SAVE_KEPT_DAYS * 24 * 3600;
		for (size_t i = 0; i < n; i++)
			if (n - i > SAVE_KEPT_MAX || v[i].mtime < cutoff)
				remove_copy(dir, v[i].name);
	}
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}
