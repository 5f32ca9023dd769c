/* Permissions: the object is created with mode 0600 (ipc_mode) owned by the engine's user,
 * ipc_mode/ipc_group widen it on request, and a process of another uid cannot attach
 * (ZIPAGE_E_PERM). The cross-uid part needs root (it drops to nobody) and is skipped
 * with a message otherwise. */
#include "tests/test_ipc_util.h"

#include <grp.h>
#include <sys/stat.h>

static int mode_of(const char *name, struct stat *st) {
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return stat(path, st) ? -1 : (int)(st->st_mode & 07777);
}

int main(void) {
    char name[64];
    ipct_name(name, sizeof name, "perm");
    umask(0); /* the engine must not depend on the umask either way */
    pid_t eng = ipct_engine(name, NULL, 0);
    struct stat st;
    CHECKF(mode_of(name, &st) == 0600, "mode %o", mode_of(name, &st));
    CHECK(st.st_uid == getuid());
    zipage_client *c = ipct_connect(name);
    CHECK(c != NULL);
    zipage_disconnect(c);

    int skipped = 0;
    if (geteuid() != 0) {
        skipped = 1;
    } else {
        pid_t k = ipct_fork(SIGKILL);
        if (!k) {
            if (setgid(65534) || setuid(65534)) _exit(20);
            zipage_client *o = NULL;
            int rc = zipage_connect(&o, name, NULL);
            _exit(rc == ZIPAGE_E_PERM && !o ? 0 : 21);
        }
        int ks;
        REQUIRE(waitpid(k, &ks, 0) == k);
        CHECKF(WIFEXITED(ks) && WEXITSTATUS(ks) == 0, "nobody could attach or failed: %d", ks);
    }
    CHECK(ipct_stop(eng, name) == 0);

    /* ipc_mode and ipc_group: a group-shared object */
    struct group *g = getgrgid(getegid());
    REQUIRE(g);
    char grp[128];
    snprintf(grp, sizeof grp, "ipc_group=%s", g->gr_name);
    const char *sets[] = {"ipc_mode=0660", grp, NULL};
    eng = ipct_engine(name, sets, 0);
    CHECKF(mode_of(name, &st) == 0660, "mode %o", mode_of(name, &st));
    CHECK(st.st_gid == getegid());
    CHECK(ipct_stop(eng, name) == 0);

    if (skipped) {
        test_done("ipc_perm");
        return test_failures ? 1 : test_skip("cross-uid attach needs root (mode checks passed)");
    }
    return test_done("ipc_perm");
}
