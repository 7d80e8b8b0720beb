/* fuse_floor.c: the cheapest FUSE filesystem we can write, for bench/run.
 *
 * It loads a directory tree into memory at start and serves it read-only
 * with every cache the kernel offers turned on (day-long entry and attribute
 * lifetimes, keep_cache, cached readdir, readdirplus, noflush, ENOTSUP for
 * xattrs) and the same multi-threaded session loop as etcdfs. It does no
 * locking and no work per request beyond an array index. What it costs over
 * tmpfs is what FUSE itself costs; bench/run measures it beside etcdfs so
 * that each FUSE figure can be split into "FUSE's floor" and "etcdfs's own".
 *
 * Usage: fuse_floor [--no-open] SRC_DIR MOUNTPOINT   (stays in the
 * foreground; unmount with fusermount3 -u, which ends it). Not installed; a
 * benchmark tool, built by bench/meson.build (ninja -C BUILD bench/fuse_floor).
 *
 * --no-open answers OPEN and FLUSH with ENOSYS, which makes the kernel stop
 * sending OPEN, FLUSH and RELEASE for regular files on this mount
 * (FUSE_CAP_NO_OPEN_SUPPORT): the floor of a filesystem that keeps no
 * per-open state and never needs to see a close. etcdfs needs both (per-open
 * write buffers saved at close, per-open snapshots for readers of files that
 * just changed), so this figure shows what that design costs, not a mode
 * etcdfs has.
 */
#define FUSE_USE_VERSION 312
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct node {
	char *name;
	fuse_ino_t parent;
	struct stat st;
	char *data;	  /* file content */
	fuse_ino_t *kids; /* directory entries, sorted as read */
	size_t n_kids, cap_kids;
};

static struct node *nodes; /* nodes[ino - 1]; written only before the mount */
static size_t n_nodes, cap_nodes;

static const double FOREVER = 86400.0;
static bool no_open; /* set before the mount, read-only after */

static fuse_ino_t add_node(const char *name, fuse_ino_t parent, const struct stat *st)
{
	if (n_nodes == cap_nodes) {
		cap_nodes = cap_nodes ? 2 * cap_nodes : 1024;
		nodes = realloc(nodes, cap_nodes * sizeof(*nodes));
		if (!nodes) {
			perror("realloc");
			exit(1);
		}
	}
	struct node *n = &nodes[n_nodes++];
	memset(n, 0, sizeof(*n));
	n->name = strdup(name);
	n->parent = parent;
	n->st = *st;
	n->st.st_ino = n_nodes;
	if (parent) {
		struct node *p = &nodes[parent - 1];
		if (p->n_kids == p->cap_kids) {
			p->cap_kids = p->cap_kids ? 2 * p->cap_kids : 8;
			p->kids = realloc(p->kids, p->cap_kids * sizeof(*p->kids));
			if (!p->kids) {
				perror("realloc");
				exit(1);
			}
		}
		p->kids[p->n_kids++] = n_nodes;
	}
	return n_nodes;
}

static void load(const char *path, fuse_ino_t ino)
{
	DIR *d = opendir(path);
	if (!d) {
		perror(path);
		exit(1);
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char *p;
		if (asprintf(&p, "%s/%s", path, de->d_name) < 0)
			exit(1);
		struct stat st;
		if (lstat(p, &st) < 0) {
			perror(p);
			exit(1);
		}
		if (S_ISDIR(st.st_mode)) {
			load(p, add_node(de->d_name, ino, &st));
		} else if (S_ISREG(st.st_mode)) {
			fuse_ino_t c = add_node(de->d_name, ino, &st);
			char *buf = malloc(st.st_size ? st.st_size : 1);
			int fd = open(p, O_RDONLY);
			if (!buf || fd < 0 || read(fd, buf, st.st_size) != st.st_size) {
				perror(p);
				exit(1);
			}
			close(fd);
			nodes[c - 1].data = buf;
		}
		free(p);
	}
	closedir(d);
}

static struct node *get(fuse_ino_t ino)
{
	return ino >= 1 && ino <= n_nodes ? &nodes[ino - 1] : NULL;
}

static void op_init(void *ud, struct fuse_conn_info *conn)
{
	(void)ud;
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *p = get(parent);
	if (!p || !S_ISDIR(p->st.st_mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	for (size_t i = 0; i < p->n_kids; i++) {
		struct node *c = &nodes[p->kids[i] - 1];
		if (strcmp(c->name, name) == 0) {
			struct fuse_entry_param e = {.ino = c->st.st_ino,
						     .attr = c->st,
						     .attr_timeout = FOREVER,
						     .entry_timeout = FOREVER};
			fuse_reply_entry(req, &e);
			return;
		}
	}
	struct fuse_entry_param neg = {.ino = 0, .entry_timeout = FOREVER};
	fuse_reply_entry(req, &neg);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct node *n = get(ino);
	if (!n)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_attr(req, &n->st, FOREVER);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct node *d = get(ino);
	if (!d || !S_ISDIR(d->st.st_mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	char *buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t pos = 0;
	for (size_t i = off; i < d->n_kids; i++) {
		struct node *c = &nodes[d->kids[i] - 1];
		size_t l;
		if (plus) {
			struct fuse_entry_param e = {.ino = c->st.st_ino,
						     .attr = c->st,
						     .attr_timeout = FOREVER,
						     .entry_timeout = FOREVER};
			l = fuse_add_direntry_plus(req, buf + pos, size - pos, c->name, &e, i + 1);
		} else {
			l = fuse_add_direntry(req, buf + pos, size - pos, c->name, &c->st, i + 1);
		}
		if (l > size - pos)
			break;
		pos += l;
		/* The kernel keeps a looked-up count for readdirplus entries;
		 * we never forget anything, so there is nothing to track. */
	}
	fuse_reply_buf(req, buf, pos);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	readdir_common(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	readdir_common(req, ino, size, off, true);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	struct node *n = get(ino);
	if (!n || !S_ISREG(n->st.st_mode)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (off >= n->st.st_size)
		size = 0;
	else if ((off_t)size > n->st.st_size - off)
		size = n->st.st_size - off;
	fuse_reply_buf(req, size ? n->data + off : NULL, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	fuse_reply_err(req, 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino, (void)fi;
	fuse_reply_err(req, no_open ? ENOSYS : 0);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	(void)ino, (void)name, (void)size;
	fuse_reply_err(req, ENOTSUP);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_release,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.flush = op_flush,
	.getxattr = op_getxattr,
};

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--no-open") == 0) {
		no_open = true;
		argv++;
		argc--;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: fuse_floor [--no-open] SRC_DIR MOUNTPOINT\n");
		return 2;
	}
	struct stat st;
	if (stat(argv[1], &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	add_node("", 0, &st);
	load(argv[1], FUSE_ROOT_ID);
	char *fargv[] = {"fuse_floor", "-o", "fsname=fuse_floor,subtype=floor", NULL};
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se || fuse_session_mount(se, argv[2]) != 0)
		return 1;
	fuse_set_signal_handlers(se);
	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, 0);
	fuse_loop_cfg_set_max_threads(lc, 16);
	int ret = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	fuse_remove_signal_handlers(se);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	return ret < 0 ? 1 : 0;
}
