/* test_log.c: the log file (log_use_file): owner-only, one line per
 * message, cut into PATH and PATH.1 at the bound, never lost in between. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "test.h"

static size_t file_size(const char *p, mode_t *mode)
{
	struct stat st;
	if (stat(p, &st) < 0)
		return (size_t)-1;
	if (mode)
		*mode = st.st_mode & 07777;
	return (size_t)st.st_size;
}

static size_t count_lines(const char *p, const char *needle)
{
	FILE *f = fopen(p, "r");
	if (!f)
		return 0;
	char line[512];
	size_t n = 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

int main(void)
{
	char *dir = test_tmpdir("log");
	char path[512], old[520];
	snprintf(path, sizeof(path), "%s/m.log", dir);
	snprintf(old, sizeof(old), "%s.1", path);
	/* an existing world-readable file is made private */
	int fd = open(path, O_CREAT | O_WRONLY, 0644);
	REQUIRE(fd >= 0, "create %s", path);
	close(fd);
	CHECK_EQ(log_use_file(path, 4096), 0);
	CHECK(strcmp(log_file_path(), path) == 0, "the path is kept");
	log_use_stderr(0);
	mode_t mode = 0;
	file_size(path, &mode);
	CHECK_EQ(mode, 0600);
	/* 200 lines of about 60 bytes: three files' worth at 4 KiB */
	for (int i = 0; i < 200; i++)
		log_info("line %03d of the rotation test", i);
	size_t cur = file_size(path, &mode), prev = file_size(old, NULL);
	CHECK(cur <= 4096 && cur > 0, "the file stays under its bound: %zu", cur);
	CHECK(prev <= 4096 && prev > 3000, "one full rotation is kept: %zu", prev);
	CHECK_EQ(mode, 0600);
	/* the newest lines are all there, in order, none cut */
	size_t kept = count_lines(path, "of the rotation test") +
		      count_lines(old, "of the rotation test");
	CHECK(kept >= 100, "the last two files hold %zu whole lines", kept);
	CHECK_EQ(count_lines(path, "line 199 of"), 1);
	CHECK_EQ(count_lines(path, "info: line 199 of the rotation test\n"), 1);
	/* a path that cannot be opened is an error, and logging goes on */
	char bad[600];
	snprintf(bad, sizeof(bad), "%s/no/such/dir/x.log", dir);
	CHECK_EQ(log_use_file(bad, 4096), -ENOENT);
	CHECK(log_file_path() == NULL, "no file after a failed open");
	CHECK(test_rm_rf(dir) == 0, "could not remove %s", dir);
	free(dir);
	return test_summary();
}
