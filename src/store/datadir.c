/* datadir.c: the store's data directory: creating and locking it, checking it
 * is writable, and the meta file that records which cluster and node it
 * belongs to (written once the first start has bootstrapped Raft). */
#include "store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

#define META_NAME "store.meta"
#define META_MAGIC "etcdfs-store 1"

static int mkdir_p(const char *path, mode_t mode)
{
	char *tmp = strdup(path);
	if (!tmp)
		return -ENOMEM;
	int ret = 0;
	for (char *p = tmp + 1;; p++) {
		if (*p == '/' || *p == 0) {
			char c = *p;
			*p = 0;
			if (mkdir(tmp, mode) < 0 && errno != EEXIST) {
				ret = -errno;
				break;
			}
			*p = c;
			if (!c)
				break;
		}
	}
	free(tmp);
	if (ret == 0) {
		struct stat st;
		if (stat(path, &st) < 0)
			ret = -errno;
		else if (!S_ISDIR(st.st_mode))
			ret = -ENOTDIR;
	}
	return ret;
}

char *store_path_join(const char *a, const char *b)
{
	char *p;
	if (asprintf(&p, "%s/%s", a, b) < 0)
		return NULL;
	return p;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int ret = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

static void cluster_string(const struct store *s, char *buf, size_t len)
{
	size_t off = 0;
	buf[0] = 0;
	if (!s->multi) {
		snprintf(buf, len, "single");
		return;
	}
	for (unsigned i = 0; i < s->n_peers && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%u=%s", i ? "," : "",
					s->peers[i].id, s->peers[i].raft_addr);
}

/* The meta file marks a completed bootstrap (written after it, atomically),
 * so a crash during the very first start is recognised and redone. */
int store_meta_write(struct store *s)
{
	char cluster[1200], *tmp = NULL, *path = NULL;
	int ret = -ENOMEM, fd = -1;
	cluster_string(s, cluster, sizeof(cluster));
	tmp = store_path_join(s->data_dir, META_NAME ".tmp");
	path = store_path_join(s->data_dir, META_NAME);
	if (!tmp || !path)
		goto out;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	char buf[1400];
	int n = snprintf(buf, sizeof(buf), "%s\nid %u\ncluster %s\n", META_MAGIC, s->cfg.id,
			 cluster);
	if (write(fd, buf, (size_t)n) != n || fsync(fd) < 0) {
		ret = errno ? -errno : -EIO;
		goto out;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, path) < 0) {
		ret = -errno;
		goto out;
	}
	ret = fsync_dir(s->data_dir);
out:
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		log_err("store: cannot write %s/%s: %s", s->data_dir, META_NAME, strerror(-ret));
	free(tmp);
	free(path);
	return ret;
}

/* 1 if present and valid, 0 if absent, negative on error. */
static int meta_read(struct store *s)
{
	char *path = store_path_join(s->data_dir, META_NAME);
	if (!path)
		return -ENOMEM;
	FILE *f = fopen(path, "re");
	if (!f) {
		int e = errno;
		free(path);
		if (e == ENOENT)
			return 0;
		log_err("store: cannot read %s/%s: %s", s->data_dir, META_NAME, strerror(e));
		return -e;
	}
	char line[1400], cluster[1200];
	unsigned id = 0;
	int ret = -EUCLEAN;
	cluster[0] = 0;
	if (!fgets(line, sizeof(line), f) || strncmp(line, META_MAGIC, strlen(META_MAGIC)) != 0)
		goto bad;
	if (!fgets(line, sizeof(line), f) || sscanf(line, "id %u", &id) != 1)
		goto bad;
	if (fgets(line, sizeof(line), f) && sscanf(line, "cluster %1199s", cluster) != 1)
		goto bad;
	if (id != s->cfg.id) {
		log_err("store: %s belongs to raft node %u, not node %u", s->data_dir, id,
			s->cfg.id);
		ret = -EINVAL;
		goto out;
	}
	char now[1200];
	cluster_string(s, now, sizeof(now));
	if (strcmp(now, cluster) != 0) {
		/* Raft keeps the bootstrapped membership; silently running with
		 * another one would expose a single node on the network or split
		 * a cluster. */
		log_err("store: %s was bootstrapped as cluster \"%s\", not \"%s\" (membership "
			"changes are not supported)",
			s->data_dir, cluster, now);
		ret = -EINVAL;
		goto out;
	}
	ret = 1;
	goto out;
bad:
	log_err("store: %s/%s is not an etcdfs store marker", s->data_dir, META_NAME);
out:
	fclose(f);
	free(path);
	return ret;
}

/* Removes what an interrupted first bootstrap left in the raft directory.
 * Only called when the meta file is absent, i.e. before any write could have
 * been acknowledged. */
static int clear_dir(const char *dir)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? 0 : -errno;
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -errno;
	}
	int ret = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(dfd, e->d_name, 0) < 0 && ret == 0)
			ret = -errno;
	}
	closedir(d);
	return ret;
}

static int lock_data_dir(struct store *s)
{
	char *path = store_path_join(s->data_dir, "LOCK");
	if (!path)
		return -ENOMEM;
	s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	int ret = 0;
	if (s->lock_fd < 0) {
		ret = -errno;
		log_err("store: cannot create %s: %s", path, strerror(-ret));
	} else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		log_err("store: data dir %s is in use by another etcdfs process (%s)", s->data_dir,
			strerror(errno));
	}
	free(path);
	return ret;
}

/* Can we create files here? Gives a clear EACCES/EROFS/ENOSPC up front
 * instead of a raft error later. */
static int probe_writable(const char *dir)
{
	char *path = store_path_join(dir, ".probe");
	if (!path)
		return -ENOMEM;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int ret = 0;
	if (fd < 0) {
		ret = -errno;
	} else {
		if (write(fd, "x", 1) != 1 || fsync(fd) < 0)
			ret = errno ? -errno : -EIO;
		close(fd);
		unlink(path);
	}
	free(path);
	return ret;
}

int store_setup_dirs(struct store *s, bool *bootstrap)
{
	int ret = mkdir_p(s->data_dir, 0700);
	if (ret < 0) {
		log_err("store: cannot create data dir %s: %s", s->data_dir, strerror(-ret));
		return ret;
	}
	ret = probe_writable(s->data_dir);
	if (ret < 0) {
		log_err("store: data dir %s is not writable: %s", s->data_dir, strerror(-ret));
		return ret;
	}
	ret = lock_data_dir(s);
	if (ret < 0)
		return ret;
	ret = meta_read(s);
	if (ret < 0)
		return ret;
	*bootstrap = ret == 0;
	if (*bootstrap) {
		/* Leftovers of an interrupted first start hold no acknowledged
		 * write (store_open never returned): start over. */
		ret = clear_dir(s->raft_dir);
		if (ret < 0) {
			log_err("store: cannot clean %s: %s", s->raft_dir, strerror(-ret));
			return ret;
		}
	}
	ret = mkdir_p(s->raft_dir, 0700);
	if (ret < 0) {
		log_err("store: cannot create %s: %s", s->raft_dir, strerror(-ret));
		return ret;
	}
	return 0;
}
