/* bolt.c: read-only bbolt file reader (see bolt.h).
 *
 * On-disk facts this relies on (all integers little-endian):
 *  - every page starts with a 16-byte header: id u64, flags u16, count u16,
 *    overflow u32; a page spans 1 + overflow pages of page_size bytes.
 *    Flags: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist.
 *  - pages 0 and 1 are meta pages; after the header: magic u32 (0xED0CDAED),
 *    version u32 (2), page_size u32, flags u32, root bucket {root pgid u64,
 *    sequence u64}, freelist pgid u64, high-water pgid u64, txid u64 and a
 *    checksum u64 = FNV-1a 64 over the 56 bytes before it.
 *  - branch elements (16 bytes): pos u32, ksize u32, child pgid u64; leaf
 *    elements (16 bytes): flags u32 (0x01 = nested bucket), pos u32, ksize u32,
 *    vsize u32. pos is relative to the element itself; the value follows the key.
 *  - a nested bucket's value is {root pgid u64, sequence u64}; root 0 means
 *    an inline bucket whose leaf page follows those 16 bytes in the value.
 *  - `etcdctl snapshot save` appends a SHA-256 of the database bytes, which
 *    makes the file size 32 more than a multiple of 512.
 */
#include "bolt.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/log.h"

#define PAGE_HDR 16
#define ELEM_SIZE 16
#define META_SIZE 64
#define META_SUM_LEN 56
#define BOLT_MAGIC 0xED0CDAEDu
#define BOLT_VERSION 2
#define F_BRANCH 0x01
#define F_LEAF 0x02
#define LEAF_BUCKET 0x01
#define MAX_DEPTH 64
#define MIN_PAGE 512u
#define MAX_PAGE (1u << 20)
#define SHA_LEN 32

struct bolt {
	int fd;
	char *name;
	struct bolt_info info;
	uint64_t root; /* root bucket's page */
};

struct meta {
	uint32_t magic, version, page_size, flags;
	uint64_t root, sequence, freelist, pgid, txid, checksum;
};

enum meta_state { META_OK = 0, META_SHORT, META_MAGIC, META_VERSION, META_CHECKSUM, META_PAGESIZE };

static const char *meta_state_str(enum meta_state s)
{
	switch (s) {
	case META_OK:
		return "valid";
	case META_SHORT:
		return "truncated";
	case META_MAGIC:
		return "bad magic";
	case META_VERSION:
		return "unsupported version";
	case META_PAGESIZE:
		return "invalid page size";
	default:
		return "bad checksum";
	}
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* Full read at off; a short read (file shrank) is -EUCLEAN, not a crash. */
static int read_at(struct bolt *b, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(b->fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			log_err("snapshot %s: read of %zu bytes at offset %" PRIu64 " failed: %s",
				b->name, len, off, strerror(e));
			return -EIO;
		}
		if (n == 0) {
			log_err("snapshot %s: truncated: read of %zu bytes at offset %" PRIu64
				" hit end of file",
				b->name, len, off);
			return -EUCLEAN;
		}
		done += (size_t)n;
	}
	return 0;
}

int bolt_pread(struct bolt *b, void *buf, size_t len, uint64_t off)
{
	int ret = read_at(b, buf, len, off);
	return ret == -EUCLEAN ? -EIO : ret;
}

static bool page_size_ok(uint32_t ps)
{
	return ps >= MIN_PAGE && ps <= MAX_PAGE && (ps & (ps - 1)) == 0;
}

/* Reads and checks the meta page at byte offset off. */
static enum meta_state read_meta(struct bolt *b, uint64_t off, struct meta *m)
{
	uint8_t raw[META_SIZE];
	memset(m, 0, sizeof(*m));
	if (off + PAGE_HDR + META_SIZE > b->info.file_size) {
		/* Still report the magic when it is visible, for the message. */
		if (off + PAGE_HDR + 4 <= b->info.file_size &&
		    read_at(b, raw, 4, off + PAGE_HDR) == 0 && le32(raw) != BOLT_MAGIC)
			return META_MAGIC;
		return META_SHORT;
	}
	if (read_at(b, raw, sizeof(raw), off + PAGE_HDR) < 0)
		return META_SHORT;
	m->magic = le32(raw);
	m->version = le32(raw + 4);
	m->page_size = le32(raw + 8);
	m->flags = le32(raw + 12);
	m->root = le64(raw + 16);
	m->sequence = le64(raw + 24);
	m->freelist = le64(raw + 32);
	m->pgid = le64(raw + 40);
	m->txid = le64(raw + 48);
	m->checksum = le64(raw + 56);
	if (m->magic != BOLT_MAGIC)
		return META_MAGIC;
	if (m->version != BOLT_VERSION)
		return META_VERSION;
	if (fnv1a64(raw, META_SUM_LEN) != m->checksum)
		return META_CHECKSUM;
	if (!page_size_ok(m->page_size))
		return META_PAGESIZE;
	return META_OK;
}

/* Verifies the SHA-256 trailer of an `etcdctl snapshot save` file. */
static int check_sha256(struct bolt *b, uint64_t data_len)
{
	int ret = -ENOMEM;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t chunk = 1 << 20;
	uint8_t *buf = malloc(chunk);
	uint8_t want[SHA_LEN], got[EVP_MAX_MD_SIZE];
	unsigned got_len = 0;
	if (!ctx || !buf)
		goto out;
	ret = -EIO;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto out;
	for (uint64_t off = 0; off < data_len;) {
		size_t n = data_len - off < chunk ? (size_t)(data_len - off) : chunk;
		ret = read_at(b, buf, n, off);
		if (ret < 0)
			goto out;
		if (EVP_DigestUpdate(ctx, buf, n) != 1) {
			ret = -EIO;
			goto out;
		}
		off += n;
	}
	ret = read_at(b, want, SHA_LEN, data_len);
	if (ret < 0)
		goto out;
	ret = -EIO;
	if (EVP_DigestFinal_ex(ctx, got, &got_len) != 1 || got_len != SHA_LEN)
		goto out;
	if (memcmp(want, got, SHA_LEN) != 0) {
		log_err("snapshot %s: bad checksum: the SHA-256 trailer written by etcdctl "
			"snapshot save does not match the data (file corrupted)",
			b->name);
		ret = -EUCLEAN;
		goto out;
	}
	ret = 0;
out:
	free(buf);
	EVP_MD_CTX_free(ctx);
	return ret;
}

static int pick_meta(struct bolt *b, struct meta *out)
{
	struct meta m0, m1;
	enum meta_state s0 = read_meta(b, 0, &m0);
	enum meta_state s1 = META_SHORT;
	if (s0 == META_OK) {
		s1 = read_meta(b, m0.page_size, &m1);
		if (s1 == META_OK && m1.page_size != m0.page_size)
			s1 = META_PAGESIZE;
	} else {
		/* Page 0 is unusable: find page 1 by trying every page size. */
		enum meta_state best = META_SHORT;
		for (uint32_t ps = MIN_PAGE; ps <= 65536; ps <<= 1) {
			enum meta_state s = read_meta(b, ps, &m1);
			if (s == META_OK && m1.page_size != ps)
				s = META_PAGESIZE; /* a meta page, but not at its own size */
			if (s == META_OK) {
				best = s;
				break;
			}
			/* Keep the most telling failure for the message. */
			if (s != META_SHORT && s != META_MAGIC)
				best = s;
			else if (s == META_MAGIC && best == META_SHORT)
				best = META_MAGIC;
		}
		s1 = best;
	}
	if (s0 != META_OK && s1 != META_OK) {
		int ret = -EUCLEAN;
		if (s0 == META_MAGIC && (s1 == META_MAGIC || s1 == META_SHORT))
			ret = -EINVAL; /* not a bbolt file at all */
		if (s0 == META_VERSION || s1 == META_VERSION)
			ret = -EINVAL;
		if (s0 == META_SHORT && s1 == META_SHORT)
			ret = b->info.file_size < PAGE_HDR + 4 ? -EINVAL : -EUCLEAN;
		log_err("snapshot %s: not a usable bbolt file (%" PRIu64
			" bytes): meta page 0: %s%s; meta page 1: %s",
			b->name, b->info.file_size, meta_state_str(s0),
			s0 == META_VERSION ? (m0.version == 1 ? " (1: boltdb v1)" : "") : "",
			meta_state_str(s1));
		return ret;
	}
	if (s0 != META_OK)
		log_warn("snapshot %s: meta page 0 is %s; using meta page 1", b->name,
			 meta_state_str(s0));
	else if (s1 != META_OK)
		log_warn("snapshot %s: meta page 1 is %s; using meta page 0", b->name,
			 meta_state_str(s1));
	bool use1 = s1 == META_OK && (s0 != META_OK || m1.txid > m0.txid);
	*out = use1 ? m1 : m0;
	b->info.meta_page = use1;
	return 0;
}

int bolt_open_fd(int fd, const char *name, struct bolt **out)
{
	int ret = -ENOMEM;
	struct bolt *b = calloc(1, sizeof(*b));
	struct stat st;
	struct meta m;
	*out = NULL;
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	b->fd = fd;
	b->name = strdup(name ? name : "?");
	if (!b->name)
		goto out_free;
	/* etcd (bbolt) holds an exclusive flock on its db while it runs: its
	 * pages change under a reader, so refuse rather than read garbage. */
	if (flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
		log_err("snapshot %s: the file is locked by another process (is etcd running "
			"on it? stop it or use etcdctl snapshot save)",
			b->name);
		ret = -EBUSY;
		goto out_free;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		log_err("snapshot %s: stat: %s", b->name, strerror(-ret));
		goto out_free;
	}
	if (!S_ISREG(st.st_mode)) {
		log_err("snapshot %s: not a regular file", b->name);
		ret = -EINVAL;
		goto out_free;
	}
	b->info.file_size = (uint64_t)st.st_size;
	if (st.st_size == 0) {
		log_err("snapshot %s: empty file (0 bytes), not an etcd backend", b->name);
		ret = -EINVAL;
		goto out_free;
	}
	ret = pick_meta(b, &m);
	if (ret < 0)
		goto out_free;
	b->info.page_size = m.page_size;
	b->info.high_pgid = m.pgid;
	b->info.txid = m.txid;
	b->root = m.root;
	ret = -EUCLEAN;
	if (m.pgid < 3 || m.root < 2 || m.root >= m.pgid) {
		log_err("snapshot %s: meta page %u is inconsistent: root page %" PRIu64
			" with %" PRIu64 " pages in use",
			b->name, b->info.meta_page, m.root, m.pgid);
		goto out_free;
	}
	if (m.pgid > b->info.file_size / m.page_size) {
		log_err("snapshot %s: truncated: meta page %u says %" PRIu64 " pages of %" PRIu32
			" bytes but the file has only %" PRIu64 " bytes",
			b->name, b->info.meta_page, m.pgid, m.page_size, b->info.file_size);
		goto out_free;
	}
	uint64_t used = m.pgid * m.page_size;
	if (b->info.file_size % 512 == SHA_LEN && b->info.file_size - SHA_LEN >= used) {
		ret = check_sha256(b, b->info.file_size - SHA_LEN);
		if (ret < 0)
			goto out_free;
		b->info.has_sha256 = true;
	}
	*out = b;
	return 0;
out_free:
	bolt_close(b);
	return ret;
}

void bolt_close(struct bolt *b)
{
	if (!b)
		return;
	close(b->fd);
	free(b->name);
	free(b);
}

const struct bolt_info *bolt_info(const struct bolt *b)
{
	return &b->info;
}

const char *bolt_name(const struct bolt *b)
{
	return b->name;
}

void bolt_root(const struct bolt *b, struct bolt_bucket *out)
{
	memset(out, 0, sizeof(*out));
	out->root = b->root;
}

void bolt_bucket_release(struct bolt_bucket *bk)
{
	if (!bk)
		return;
	free(bk->inline_page);
	memset(bk, 0, sizeof(*bk));
}

/* State of one walk: the pages seen so far, to refuse cycles and shared
 * pages (each page of a sound file belongs to exactly one tree node). */
struct walk {
	struct bolt *b;
	uint8_t *seen;
	bolt_visit_cb cb;
	void *arg;
};

/* Reads the node at pgid with its overflow pages into a new buffer. */
static int read_node(struct walk *w, uint64_t pgid, uint8_t **bufp, size_t *lenp)
{
	struct bolt *b = w->b;
	uint64_t high = b->info.high_pgid, ps = b->info.page_size;
	uint8_t hdr[PAGE_HDR];
	if (pgid < 2 || pgid >= high) {
		log_err("snapshot %s: page %" PRIu64 " out of range (%" PRIu64 " pages in use)",
			b->name, pgid, high);
		return -EUCLEAN;
	}
	int ret = read_at(b, hdr, sizeof(hdr), pgid * ps);
	if (ret < 0)
		return ret;
	uint64_t id = le64(hdr);
	uint32_t overflow = le32(hdr + 12);
	if (id != pgid) {
		log_err("snapshot %s: page %" PRIu64 " header says it is page %" PRIu64, b->name,
			pgid, id);
		return -EUCLEAN;
	}
	if (overflow >= high - pgid) {
		log_err("snapshot %s: page %" PRIu64 " overflow of %" PRIu32
			" pages runs past the %" PRIu64 " pages in use",
			b->name, pgid, overflow, high);
		return -EUCLEAN;
	}
	for (uint64_t p = pgid; p <= pgid + overflow; p++) {
		if (w->seen[p / 8] & (1u << (p % 8))) {
			log_err("snapshot %s: page %" PRIu64
				" is reached twice (cycle or shared page in the tree)",
				b->name, p);
			return -EUCLEAN;
		}
		w->seen[p / 8] |= (uint8_t)(1u << (p % 8));
	}
	size_t len = (size_t)((overflow + 1ull) * ps);
	uint8_t *buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	ret = read_at(b, buf, len, pgid * ps);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	*bufp = buf;
	*lenp = len;
	return 0;
}

/* Walks one node held in buf (len bytes, at file offset off). pgid is 0 for
 * an inline page. Returns 0, 1 (a visitor asked to stop) or an error. */
static int walk_node(struct walk *w, const uint8_t *buf, size_t len, uint64_t off, uint64_t pgid,
		     int depth)
{
	struct bolt *b = w->b;
	char where[64];
	if (pgid)
		snprintf(where, sizeof(where), "page %" PRIu64, pgid);
	else
		snprintf(where, sizeof(where), "inline page at offset %" PRIu64, off);
	if (len < PAGE_HDR) {
		log_err("snapshot %s: %s: shorter than a page header", b->name, where);
		return -EUCLEAN;
	}
	uint16_t flags = le16(buf + 8), count = le16(buf + 10);
	if ((size_t)count * ELEM_SIZE > len - PAGE_HDR) {
		log_err("snapshot %s: %s: %u elements do not fit in %zu bytes", b->name, where,
			count, len);
		return -EUCLEAN;
	}
	if (!pgid)
		b->info.pages_inline++;
	else
		b->info.pages_overflow += len / b->info.page_size - 1;
	if (flags & F_BRANCH) {
		b->info.pages_branch++;
		if (!pgid) {
			log_err("snapshot %s: %s: an inline bucket cannot be a branch", b->name,
				where);
			return -EUCLEAN;
		}
		if (depth >= MAX_DEPTH) {
			log_err("snapshot %s: %s: tree deeper than %d levels", b->name, where,
				MAX_DEPTH);
			return -EUCLEAN;
		}
		for (unsigned i = 0; i < count; i++) {
			const uint8_t *e = buf + PAGE_HDR + (size_t)i * ELEM_SIZE;
			uint64_t child = le64(e + 8);
			uint8_t *cbuf;
			size_t clen;
			int ret = read_node(w, child, &cbuf, &clen);
			if (ret < 0)
				return ret;
			ret = walk_node(w, cbuf, clen, child * b->info.page_size, child, depth + 1);
			free(cbuf);
			if (ret != 0)
				return ret;
		}
		return 0;
	}
	if (!(flags & F_LEAF)) {
		log_err("snapshot %s: %s: unexpected page flags 0x%x (not a branch or leaf)",
			b->name, where, flags);
		return -EUCLEAN;
	}
	if (pgid)
		b->info.pages_leaf++;
	for (unsigned i = 0; i < count; i++) {
		size_t e = PAGE_HDR + (size_t)i * ELEM_SIZE;
		uint32_t eflags = le32(buf + e), pos = le32(buf + e + 4);
		uint32_t ksize = le32(buf + e + 8), vsize = le32(buf + e + 12);
		size_t k = e + pos;
		if (k < e || k > len || ksize > len - k || vsize > len - k - ksize) {
			log_err("snapshot %s: %s: element %u (key %" PRIu32 " + value %" PRIu32
				" bytes at +%" PRIu32 ") runs past the page",
				b->name, where, i, ksize, vsize, pos);
			return -EUCLEAN;
		}
		struct bolt_item it = {
			.key = buf + k,
			.key_len = ksize,
			.val = buf + k + ksize,
			.val_len = vsize,
			.val_off = off + k + ksize,
			.is_bucket = eflags & LEAF_BUCKET,
		};
		int ret = w->cb(w->arg, &it);
		if (ret != 0)
			return ret;
	}
	return 0;
}

static int foreach (struct bolt *b, const struct bolt_bucket *bk, bolt_visit_cb cb, void *arg)
{
	struct walk w = {.b = b, .cb = cb, .arg = arg};
	int ret;
	if (!bk->root)
		return walk_node(&w, bk->inline_page, bk->inline_len, bk->inline_off, 0, 0);
	w.seen = calloc(b->info.high_pgid / 8 + 1, 1);
	if (!w.seen)
		return -ENOMEM;
	uint8_t *buf;
	size_t len;
	ret = read_node(&w, bk->root, &buf, &len);
	if (ret == 0) {
		ret = walk_node(&w, buf, len, bk->root * b->info.page_size, bk->root, 0);
		free(buf);
	}
	free(w.seen);
	return ret;
}

int bolt_bucket_foreach(struct bolt *b, const struct bolt_bucket *bk, bolt_visit_cb cb, void *arg)
{
	int ret = foreach (b, bk, cb, arg);
	return ret > 0 ? 0 : ret;
}

struct find {
	struct bolt *b;
	const char *name;
	size_t name_len;
	struct bolt_bucket *out;
	int err;
};

static int find_cb(void *arg, const struct bolt_item *it)
{
	struct find *f = arg;
	if (it->key_len != f->name_len || memcmp(it->key, f->name, f->name_len) != 0)
		return 0;
	if (!it->is_bucket) {
		log_err("snapshot %s: '%s' is a plain value, not a bucket", f->b->name, f->name);
		return -EUCLEAN;
	}
	if (it->val_len < 16) {
		log_err("snapshot %s: bucket '%s' has a %zu-byte header (want 16)", f->b->name,
			f->name, it->val_len);
		return -EUCLEAN;
	}
	f->out->root = le64(it->val);
	if (f->out->root == 0) {
		size_t n = it->val_len - 16;
		f->out->inline_page = malloc(n ? n : 1);
		if (!f->out->inline_page)
			return -ENOMEM;
		memcpy(f->out->inline_page, it->val + 16, n);
		f->out->inline_len = n;
		f->out->inline_off = it->val_off + 16;
	}
	return 1;
}

int bolt_bucket_open(struct bolt *b, const struct bolt_bucket *parent, const char *name,
		     struct bolt_bucket *out)
{
	struct find f = {.b = b, .name = name, .name_len = strlen(name), .out = out};
	memset(out, 0, sizeof(*out));
	int ret = foreach (b, parent, find_cb, &f);
	if (ret < 0) {
		bolt_bucket_release(out);
		return ret;
	}
	return ret == 1 ? 0 : -ENOENT;
}
