/* local.c: the side table of write-path state (struct cache_local), one
 * slot per node the mount has written. */
#include <errno.h>
#include <stdlib.h>

#include "save_int.h"

static const struct cache_local none;

static bool local_keep(const struct cache_local *l)
{
	return l->local_file || l->hidden || l->pinned;
}

static void local_free(struct cache_local *l)
{
	free(l->local_data);
	free(l);
}

const struct cache_local_ops save_local_ops = {.keep = local_keep, .free = local_free};

const struct cache_local *save_local(const struct cache_node *n)
{
	const struct cache_local *l = cache_node_local(n);
	return l ? l : &none;
}

struct cache_local *save_local_mut(struct cache_node *n)
{
	struct cache_local *l = cache_node_local(n);
	if (l)
		return l;
	l = malloc(sizeof(*l));
	if (!l)
		return NULL;
	*l = none;
	if (cache_node_set_local(n, l) < 0) {
		free(l);
		return NULL;
	}
	return l;
}

void save_clear_local(struct cache_node *n)
{
	struct cache_local *l = cache_node_local(n);
	if (!l)
		return;
	l->local_file = false;
	l->shadow = false;
	l->is_link = false;
	free(l->local_data);
	l->local_data = NULL;
	l->local_len = 0;
}

void save_mark_stored(struct cache_node *n)
{
	struct cache_local *l = cache_node_local(n);
	if (!l)
		return;
	l->local_file = false;
	l->hidden = false;
	l->origin_rev = 0; /* the key it replaced is replaced */
	free(l->local_data);
	l->local_data = NULL;
	l->local_len = 0;
}

void save_unhide_locked(struct cache *c, struct cache_node *n, bool prune)
{
	struct cache_local *l = cache_node_local(n);
	if (!l || !l->hidden)
		return;
	l->hidden = false;
	if (prune && !n->has_value)
		cache_prune_locked(c, n);
}

void save_unpin_locked(struct cache_node *n)
{
	struct cache_local *l = cache_node_local(n);
	if (l)
		l->pinned = false;
}

int save_mkfile_locked(struct cache *c, struct cache_node *parent, int ns, const char *seg,
		       size_t seg_len, struct cache_node **out)
{
	struct cache_node *n;
	int ret = cache_mknode_locked(c, parent, ns, seg, seg_len, false, &n);
	if (ret < 0)
		return ret;
	struct cache_local *l = save_local_mut(n);
	if (!l) {
		cache_prune_locked(c, n);
		return -ENOMEM;
	}
	l->local_file = true;
	*out = n;
	return 0;
}
