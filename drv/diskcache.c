/* diskcache: files kept between starts (see diskcache.h). */
#include "drv/diskcache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int mkdir_p(const char *dir) {
    char p[512];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) && errno != EEXIST) return -1;
        *s = '/';
    }
    return mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
}

void diskcache_store(const char *dir, const char *name, const void *data, size_t len) {
    char path[600], tmp[640];
    if (!dir || !*dir || mkdir_p(dir) ||
        snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return;
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w <= 0) break;
        p += w, left -= (size_t)w;
    }
    if (close(fd) || left) {
        unlink(tmp);
        return;
    }
    if (rename(tmp, path)) unlink(tmp);
}

int diskcache_load(const char *dir, const char *name, void *buf, size_t len) {
    char path[600];
    if (!dir || !*dir || snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    int ok = !fstat(fd, &st) && st.st_size == (off_t)len;
    char *p = buf;
    size_t left = ok ? len : 0;
    while (left) {
        ssize_t r = read(fd, p, left);
        if (r <= 0) {
            ok = 0;
            break;
        }
        p += r, left -= (size_t)r;
    }
    close(fd);
    return ok;
}
