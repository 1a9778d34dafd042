/* pycri-exec: the last steps of an exec'd process (ExecSync, Exec), in C.
 *
 * Written for pycri. The shim forks the exec's process straight into the container's pid
 * namespace (and, where there is a unified hierarchy, its cgroup); the child puts its
 * stdio on 0-2 and execs this program, which does what runtime.container_init.exec_into
 * does in Python - without the ~1,100 copy-on-write faults a forked Python child pays
 * before its own execve (3-6 ms here). The plan is computed by the shim
 * (runtime/exec_helper/__init__.py): nothing here resolves names or reads the spec.
 *
 *     argv: pycri-exec
 *     fd 0-2: the exec's stdio (a tty: the pty slave on all three)
 *     fd 3:   the plan (a memfd): records "key=value\0", in this order of use:
 *             cgroup=<file>        write "0" to it (a v1 hierarchy's tasks: moves this
 *                                  single-threaded process without the threadgroup lock)
 *             rlimit=<res> <soft> <hard>   clamped to the current hard limit (-1: infinity)
 *             oom=<n>              oom_score_adj; a lower value than the current one may be
 *                                  refused (no CAP_SYS_RESOURCE): the current one stays
 *             ns=<fd> <nstype>     setns(fd, nstype), in the order given (mount last)
 *             tty=1                TIOCSCTTY on fd 0 (after setsid)
 *             cwd=<dir>            chdir; must be reachable and outside procfs
 *             path=<PATH>          where args[0] is looked up (when it has no '/')
 *             apparmor=<profile>   the profile of the next execve
 *             seccomp=<hex>        a BPF program (struct sock_filter[]); loaded before the
 *             seccomp_late=1       credentials, or after them with no_new_privs
 *             bounding=<hex mask>  capabilities kept in the bounding set, up to
 *             last_cap=<n>
 *             uid=<n> gid=<n> groups=<n,n,...>
 *             caps=<effective> <permitted> <inheritable>   hex masks
 *             ambient=<n>          raised, one record each
 *             nnp=1                no_new_privs
 *             ready=<JSON>         the line written to fd 4 once everything is in place
 *             arg=<s> ... env=<s> ...
 *     fd 4:   the report pipe (close-on-exec: EOF at the execve tells the shim it worked);
 *             a failure is one line {"error": msg, "kind": <pycri_common.errors class>}
 *             and the exit code 1 (126/127 when args[0] cannot be executed)
 *     fd 5-9: the namespaces named by ns= records; every fd from 10 on is closed
 *     Signals: all are set to their default and unblocked first (vspawn.c starts this
 *     program with all of them blocked).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PLAN_FD 3
#define REPORT_FD 4
#define FIRST_FREE_FD 10   /* after the namespace fds 5-9 */
#define MAX_LIST 4096

static void report(const char *kind, const char *msg) {
    static char out[16384];
    size_t n = 0;
    const char *head = "{\"error\": \"";
    for (const char *p = head; *p && n < sizeof out - 64; p++) out[n++] = *p;
    for (const unsigned char *p = (const unsigned char *)msg; *p && n < sizeof out - 64; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)snprintf(out + n, 7, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    n += (size_t)snprintf(out + n, sizeof out - n, "\", \"kind\": \"%s\"}\n", kind);
    if (write(REPORT_FD, out, n) < 0) { /* nobody to tell */ }
}

static void __attribute__((noreturn, format(printf, 3, 4)))
fail(int code, const char *kind, const char *fmt, ...) {
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    report(kind, msg);
    _exit(code);
}

/* an OSError of the Python path: "exec init: [Errno N] <what>: <strerror>" */
#define FAIL_ERRNO(what, ...) fail(1, "PycriError", "exec init: [Errno %d] " what ": %s", \
                                   errno, ##__VA_ARGS__, strerror(errno))

static char *read_plan(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) fail(1, "PycriError", "exec init: out of memory reading the plan");
        ssize_t got = read(PLAN_FD, buf + n, cap - n);
        if (got < 0) {
            if (errno == EINTR) continue;
            FAIL_ERRNO("reading the plan");
        }
        if (got == 0) break;
        n += (size_t)got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    close(PLAN_FD);
    *len = n;
    return buf;
}

static const char *value_of(const char *rec, const char *key) {
    size_t k = strlen(key);
    return strncmp(rec, key, k) == 0 && rec[k] == '=' ? rec + k + 1 : NULL;
}

static unsigned long long hex(const char *s) { return strtoull(s, NULL, 16); }

static void write_file(const char *path, const char *value, int *err) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    *err = 0;
    if (fd < 0) { *err = errno; return; }
    if (write(fd, value, strlen(value)) < 0) *err = errno;
    close(fd);
}

static void set_rlimit(const char *v) {
    int res;
    long long soft, hard;
    if (sscanf(v, "%d %lld %lld", &res, &soft, &hard) != 3)
        fail(1, "PycriError", "exec init: bad rlimit record %s", v);
    struct rlimit cur, want;
    if (getrlimit(res, &cur) != 0) FAIL_ERRNO("getrlimit(%d)", res);
    want.rlim_max = hard < 0 ? RLIM_INFINITY : (rlim_t)hard;
    want.rlim_cur = soft < 0 ? RLIM_INFINITY : (rlim_t)soft;
    if (cur.rlim_max != RLIM_INFINITY && (want.rlim_max == RLIM_INFINITY || want.rlim_max > cur.rlim_max))
        want.rlim_max = cur.rlim_max;
    if (want.rlim_max != RLIM_INFINITY && (want.rlim_cur == RLIM_INFINITY || want.rlim_cur > want.rlim_max))
        want.rlim_cur = want.rlim_max;
    if (setrlimit(res, &want) != 0) FAIL_ERRNO("setrlimit(%d)", res);
}

static void set_oom_score_adj(const char *v) {
    char cur[32] = {0};
    int fd = open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, cur, sizeof cur - 1) < 0) FAIL_ERRNO("reading oom_score_adj");
    close(fd);
    long want = strtol(v, NULL, 10), now = strtol(cur, NULL, 10);
    if (want == now) return;
    int err;
    write_file("/proc/self/oom_score_adj", v, &err);
    if (err == 0) return;
    if (want < now && (err == EACCES || err == EPERM)) return;   /* clamped: the current stays */
    errno = err;
    FAIL_ERRNO("writing oom_score_adj %s", v);
}

static void enter_cwd(const char *dir) {
    char buf[8];
    struct stat here, proc;
    if (chdir(dir) != 0 || (getcwd(buf, sizeof buf) == NULL && errno != ERANGE))
        fail(1, "InvalidArgument", "exec: process.cwd: cannot enter '%s': %s", dir, strerror(errno));
    if (stat(".", &here) == 0 && stat("/proc", &proc) == 0 && here.st_dev == proc.st_dev)
        fail(1, "InvalidArgument", "exec: process.cwd: '%s' is inside procfs, refused", dir);
}

static int executable(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

static const char *find_executable(const char *name, const char *path, char *out, size_t cap) {
    if (strchr(name, '/')) {
        if (executable(name)) return name;
        struct stat st;
        if (stat(name, &st) == 0)
            fail(126, "FailedPrecondition", "process.args[0]: '%s' is not an executable file", name);
        fail(127, "FailedPrecondition", "process.args[0]: executable file '%s' not found in $PATH", name);
    }
    const char *p = path;
    for (;;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *dir = len ? p : ".";
        if (!len) len = 1;
        int slash = dir[len - 1] == '/';
        if ((size_t)snprintf(out, cap, "%.*s%s%s", (int)len, dir, slash ? "" : "/", name) < cap
                && executable(out))
            return out;
        if (!end) break;
        p = end + 1;
    }
    fail(127, "FailedPrecondition", "process.args[0]: executable file '%s' not found in $PATH", name);
}

static void set_apparmor(const char *profile) {
    char value[4096];
    snprintf(value, sizeof value, "exec %s", profile);
    const char *paths[] = {"/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"};
    for (int i = 0; i < 2; i++) {
        int err;
        write_file(paths[i], value, &err);
        if (err == 0) return;
        if (err != ENOENT) break;
    }
    fail(1, "InvalidArgument", "process.apparmor_profile: cannot set profile '%s'", profile);
}

static void load_seccomp(const char *hexprog) {
    size_t n = strlen(hexprog) / 2;
    unsigned char *bytes = malloc(n ? n : 1);
    if (!bytes || n == 0 || n % 8) fail(1, "PycriError", "exec init: bad seccomp program");
    for (size_t i = 0; i < n; i++) {
        char two[3] = {hexprog[2 * i], hexprog[2 * i + 1], 0};
        bytes[i] = (unsigned char)strtoul(two, NULL, 16);
    }
    struct sock_fprog prog = {.len = (unsigned short)(n / 8), .filter = (struct sock_filter *)bytes};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
        FAIL_ERRNO("prctl(PR_SET_SECCOMP)");
}

int main(void) {
    size_t len;
    char *plan = read_plan(&len);
    const char *args[MAX_LIST + 1], *envs[MAX_LIST + 1];
    gid_t groups[MAX_LIST];
    int nargs = 0, nenv = 0, ngroups = 0;
    const char *cwd = NULL, *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    const char *apparmor = NULL, *seccomp = NULL, *ready = NULL;
    int seccomp_late = 0, tty = 0, nnp = 0, last_cap = -1;
    unsigned long long bounding = ~0ULL, eff = 0, perm = 0, inh = 0;
    long uid = -1, gid = -1;
    int ambient[64], nambient = 0;

    /* started by vspawn.c: every signal blocked, the shim's ignored ones (SIGPIPE, SIGXFSZ)
     * still ignored, maybe other fds open: defaults, nothing blocked, only ours */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    syscall(SYS_close_range, FIRST_FREE_FD, ~0U, 0);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) FAIL_ERRNO("prctl(PR_SET_DUMPABLE)");
    if (fcntl(REPORT_FD, F_SETFD, FD_CLOEXEC) != 0) FAIL_ERRNO("fcntl(report fd)");
    setsid();
    /* first pass: the steps that happen in order as records come */
    for (size_t off = 0; off < len; off += strlen(plan + off) + 1) {
        const char *r = plan + off, *v;
        if ((v = value_of(r, "cgroup"))) {
            int err;
            write_file(v, "0", &err);
            if (err) fail(1, "InvalidArgument", "cgroup: writing '0' to %s: %s", v, strerror(err));
        } else if ((v = value_of(r, "rlimit"))) set_rlimit(v);
        else if ((v = value_of(r, "oom"))) set_oom_score_adj(v);
        else if ((v = value_of(r, "ns"))) {
            int fd, type;
            if (sscanf(v, "%d %d", &fd, &type) != 2) fail(1, "PycriError", "exec init: bad ns record");
            if (setns(fd, type) != 0) FAIL_ERRNO("setns(%d, %#x)", fd, type);
            close(fd);
        }
        else if ((v = value_of(r, "tty"))) tty = 1;
        else if ((v = value_of(r, "cwd"))) cwd = v;
        else if ((v = value_of(r, "path"))) path = v;
        else if ((v = value_of(r, "apparmor"))) apparmor = v;
        else if ((v = value_of(r, "seccomp"))) seccomp = v;
        else if ((v = value_of(r, "seccomp_late"))) seccomp_late = 1;
        else if ((v = value_of(r, "bounding"))) bounding = hex(v);
        else if ((v = value_of(r, "last_cap"))) last_cap = atoi(v);
        else if ((v = value_of(r, "uid"))) uid = atol(v);
        else if ((v = value_of(r, "gid"))) gid = atol(v);
        else if ((v = value_of(r, "groups"))) {
            for (char *p = (char *)v; *p && ngroups < MAX_LIST; ) {
                groups[ngroups++] = (gid_t)strtoul(p, &p, 10);
                if (*p == ',') p++;
            }
        }
        else if ((v = value_of(r, "caps"))) {
            if (sscanf(v, "%llx %llx %llx", &eff, &perm, &inh) != 3)
                fail(1, "PycriError", "exec init: bad caps record");
        }
        else if ((v = value_of(r, "ambient")) && nambient < 64) ambient[nambient++] = atoi(v);
        else if ((v = value_of(r, "nnp"))) nnp = 1;
        else if ((v = value_of(r, "ready"))) ready = v;
        else if ((v = value_of(r, "arg")) && nargs < MAX_LIST) args[nargs++] = v;
        else if ((v = value_of(r, "env")) && nenv < MAX_LIST) envs[nenv++] = v;
    }
    args[nargs] = NULL;
    envs[nenv] = NULL;
    if (nargs == 0 || uid < 0 || gid < 0 || last_cap < 0 || !ready)
        fail(1, "PycriError", "exec init: incomplete plan");
    if (tty && ioctl(0, TIOCSCTTY, 0) != 0) FAIL_ERRNO("ioctl(TIOCSCTTY)");
    if (cwd) enter_cwd(cwd);
    char found[4096];
    const char *argv0 = find_executable(args[0], path, found, sizeof found);
    if (apparmor) set_apparmor(apparmor);
    if (seccomp && !seccomp_late) load_seccomp(seccomp);
    /* credentials, as runtime.capabilities.setup_process_credentials */
    for (int cap = 0; cap <= last_cap; cap++)
        if (!(bounding & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
            FAIL_ERRNO("prctl(PR_CAPBSET_DROP, %d)", cap);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) FAIL_ERRNO("prctl(PR_SET_KEEPCAPS)");
    if (setgroups((size_t)ngroups, groups) != 0) FAIL_ERRNO("setgroups");
    if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) FAIL_ERRNO("setresgid(%ld)", gid);
    if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) FAIL_ERRNO("setresuid(%ld)", uid);
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) FAIL_ERRNO("prctl(PR_SET_KEEPCAPS)");
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2] = {
        {.effective = (unsigned)eff, .permitted = (unsigned)perm, .inheritable = (unsigned)inh},
        {.effective = (unsigned)(eff >> 32), .permitted = (unsigned)(perm >> 32),
         .inheritable = (unsigned)(inh >> 32)}};
    if (syscall(SYS_capset, &hdr, data) != 0) FAIL_ERRNO("capset");
    for (int i = 0; i < nambient; i++)
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, ambient[i], 0, 0) != 0)
            FAIL_ERRNO("prctl(PR_CAP_AMBIENT_RAISE, %d)", ambient[i]);
    if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) FAIL_ERRNO("prctl(PR_SET_NO_NEW_PRIVS)");
    size_t rl = strlen(ready);
    char *line = malloc(rl + 1);
    if (!line) fail(1, "PycriError", "exec init: out of memory");
    memcpy(line, ready, rl);
    line[rl] = '\n';
    if (write(REPORT_FD, line, rl + 1) != (ssize_t)(rl + 1)) _exit(1);
    if (seccomp && seccomp_late) load_seccomp(seccomp);
    execve(argv0, (char *const *)args, (char *const *)envs);
    fail(errno == ENOENT ? 127 : 126, "FailedPrecondition", "exec '%s': %s", argv0, strerror(errno));
}
