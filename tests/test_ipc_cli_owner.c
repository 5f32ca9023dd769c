/* Another uid cannot squat an engine's name: a process of uid 999 creates /dev/shm/NAME
 * (mode 0666) first; root's client refuses it with ZIPAGE_E_PERM naming uid 999 (the library
 * and zipage-cli alike), and only with the uid named explicitly (engine_uid,
 * --engine-uid 999) goes on, to the next check. An engine really run by uid 999
 * (ipc_mode=0666) is refused the same way by default, and serves a client of a third uid
 * (998) once that client names it. A root client is not served by it even when named: a
 * non-root engine cannot read root's /proc/PID/maps to verify the claim, and accepting
 * unverifiable root claims would let anyone hold slots with claims naming pid 1
 * (docs/IPC.md, threat model). Needs root (it switches uids); skipped otherwise. */
#include "tests/test_ipc_util.h"

#include <fcntl.h>
#include <sys/stat.h>

#define OTHER 999
#define THIRD 998

static void become(uid_t uid);

/* Runs zipage-cli with args (as uid `as` when not 0); returns its exit status and its stderr
 * in err. */
static int run_cli(const char *const *args, char *err, size_t cap, uid_t as) {
    const char *b = getenv("ZP_BUILD");
    char cli[300];
    snprintf(cli, sizeof cli, "%s/zipage-cli", b && *b ? b : "build");
    REQUIRE(access(cli, X_OK) == 0);
    char *argv[16] = {cli};
    for (int i = 0; args[i] && i < 14; i++)
        argv[i + 1] = (char *)args[i];
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t k = ipct_fork(SIGKILL);
    if (!k) {
        if (as) become(as);
        dup2(pfd[1], 2);
        dup2(pfd[1], 1);
        close(pfd[0]);
        alarm(20);
        execv(cli, argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t got = 0;
    ssize_t r;
    while (got < cap - 1 && (r = read(pfd[0], err + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    err[got] = 0;
    close(pfd[0]);
    int st;
    REQUIRE(waitpid(k, &st, 0) == k);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Becomes uid/gid uid, keeping the parent-death signal and /proc readability. */
static void become(uid_t uid) {
    if (setgid(uid) || setuid(uid)) _exit(20);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* cleared by the credential change */
    prctl(PR_SET_DUMPABLE, 1);        /* as an engine started by that user would be */
}

int main(void) {
    if (geteuid() != 0) return test_skip("switching to uid 999 needs root");
    char name[64], shm[80];
    ipct_name(name, sizeof name, "owner");
    snprintf(shm, sizeof shm, "/%s", name);

    /* 1. a squatter of uid 999 */
    pid_t k = ipct_fork(SIGKILL);
    if (!k) {
        become(OTHER);
        int fd = shm_open(shm, O_RDWR | O_CREAT | O_EXCL, 0666);
        _exit(fd < 0 || fchmod(fd, 0666) || ftruncate(fd, 65536) ? 21 : 0);
    }
    int st;
    REQUIRE(waitpid(k, &st, 0) == k && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    zipage_client *c = NULL;
    int rc = zipage_connect(&c, name, NULL);
    printf("squatted, default: %s: %s\n", zipage_strerror(rc), zipage_last_error());
    CHECK(rc == ZIPAGE_E_PERM && !c && strstr(zipage_last_error(), "owned by uid 999"));
    zipage_options o = {.engine_uid_set = 1, .engine_uid = OTHER};
    rc = zipage_connect(&c, name, &o);
    printf("squatted, engine_uid 999: %s: %s\n", zipage_strerror(rc), zipage_last_error());
    CHECK(rc == ZIPAGE_E_PERM && !c && strstr(zipage_last_error(), "non-root")); /* root */
    char err[2048];
    const char *a1[] = {"--name", name, "stats", NULL};
    int x = run_cli(a1, err, sizeof err, 0);
    printf("zipage-cli stats: %d: %s", x, err);
    CHECK(x == 1 && strstr(err, "owned by uid 999") && strstr(err, "--engine-uid 999"));
    const char *a2[] = {"--name", name, "--engine-uid", "999", "stats", NULL};
    x = run_cli(a2, err, sizeof err, THIRD); /* named, past the owner check: not an engine */
    printf("zipage-cli --engine-uid 999 stats as uid 998: %d: %s", x, err);
    CHECK(x == 1 && strstr(err, "not a zipage object"));
    shm_unlink(shm);

    /* 2. an engine run by uid 999 */
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    k = ipct_fork(SIGKILL);
    if (!k) {
        become(OTHER);
        const char *sets[] = {"ipc_mode=0666", NULL};
        pid_t e = ipct_engine(name, sets, 0);
        (void)!write(pfd[1], &e, sizeof e);
        int es;
        waitpid(e, &es, 0);
        _exit(WIFEXITED(es) ? WEXITSTATUS(es) : 30);
    }
    close(pfd[1]);
    pid_t eng = 0;
    REQUIRE(read(pfd[0], &eng, sizeof eng) == sizeof eng && eng > 0);
    rc = zipage_connect(&c, name, NULL);
    printf("engine of uid 999, default: %s: %s\n", zipage_strerror(rc), zipage_last_error());
    CHECK(rc == ZIPAGE_E_PERM && strstr(zipage_last_error(), "owned by uid 999"));
    rc = zipage_connect(&c, name, &o); /* root, named: the engine cannot verify the claim */
    printf("engine of uid 999, root naming it: %s: %s\n", zipage_strerror(rc), zipage_last_error());
    CHECK(rc == ZIPAGE_E_PERM && !c && strstr(zipage_last_error(), "non-root"));
    pid_t t = ipct_fork(SIGKILL); /* a client of uid 998 naming the engine's uid is served */
    if (!t) {
        become(THIRD);
        zipage_client *tc = NULL;
        if (zipage_connect(&tc, name, &o)) {
            fprintf(stderr, "uid 998 connect: %s\n", zipage_last_error());
            _exit(31);
        }
        char out[16];
        zipage_event fin;
        int ok = ipct_generate(tc, "hi", 10, out, sizeof out, &fin) == 0 && fin.text_len == 2 &&
                 !memcmp(out, "hi", 2);
        zipage_disconnect(tc);
        _exit(ok ? 0 : 32);
    }
    REQUIRE(waitpid(t, &st, 0) == t);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "uid 998 client: status %d", st);
    const char *a3[] = {"--name", name, "--engine-uid", "999", "generate", "--prompt", "ok", NULL};
    x = run_cli(a3, err, sizeof err, THIRD);
    CHECKF(x == 0 && !strcmp(err, "ok\n"), "zipage-cli generate as uid 998: %d: %s", x, err);
    kill(eng, SIGTERM);
    REQUIRE(waitpid(k, &st, 0) == k);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "engine of uid 999: status %d", st);
    shm_unlink(shm);
    return test_done("ipc_cli_owner");
}
