/* pycri-keeper: the parent of one container process (docs/architecture.md, "Process model").
 *
 * Written for pycri; no libc (-nostdlib -static, raw syscalls), so a keeper costs a few
 * pages. The container init (runtime/container_init.py) forks the process that will exec the
 * container (in the container's pid namespace when it has one): the child goes on into the
 * container's cgroup, the parent (which never entered it) execs this program with
 *
 *     argv: pycri-keeper <container id> <exit file>
 *     fd 3: read end of the pid pipe, which holds the child's host pid (decimal) and no
 *           writer any more. EOF without a pid: nothing to keep (exit 1, nothing recorded).
 *     fd 4: write end of the exit pipe; fd 5 its read end (kept for a restarted monitor)
 *     fd 6, 7: the monitor's ends of the container's stdout/stderr pipes (or the pty master),
 *           held only so that they outlive the monitor: the container blocks on a full pipe
 *           instead of losing output, and a restarted monitor takes them back (pidfd_getfd).
 *
 * It makes itself a child subreaper (the intermediate process of a pid-namespace fork exits
 * and the container is re-parented to us), reaps until the container's pid is reaped, writes
 * {"pid": P, "status": <wait status>, "finished_at": <ns>} to <exit file>.tmp and renames it
 * to <exit file> (atomic), closes fd 4 (the monitor sees EOF on the exit pipe), and then
 * waits for SIGTERM from the monitor, which sends it once it has drained the pipes. Until the
 * exit is written, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2 and SIGPIPE are blocked: only
 * SIGKILL ends a keeper early. It never has PR_SET_PDEATHSIG: it outlives the monitor.
 * Exit code 0 after a recorded exit (by SIGTERM), 1 when no pid came (nothing recorded).
 */
#include <asm/unistd.h>
#include <linux/wait.h>

typedef long i64;
typedef unsigned long u64;

#if defined(__x86_64__)
static i64 sc(i64 n, i64 a, i64 b, i64 c, i64 d) {
    i64 ret;
    register i64 r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
static i64 sc(i64 n, i64 a, i64 b, i64 c, i64 d) {
    register i64 x8 __asm__("x8") = n;
    register i64 x0 __asm__("x0") = a;
    register i64 x1 __asm__("x1") = b;
    register i64 x2 __asm__("x2") = c;
    register i64 x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}
#else
#error "pycri-keeper: unsupported architecture"
#endif

#define AT_FDCWD (-100)
#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_CLOEXEC 02000000
#define EINTR 4
#define ECHILD 10
#define PR_SET_CHILD_SUBREAPER 36
#define CLOCK_REALTIME 0
#define SIG_BLOCK 0
#define SIG_UNBLOCK 1
#define SIGCHLD 17

struct ts { i64 sec, nsec; };
struct ksigaction { u64 handler; u64 flags; u64 restorer; u64 mask; };

static void __attribute__((noreturn)) die(i64 code) {
    for (;;) sc(__NR_exit_group, code, 0, 0, 0);
}

static u64 len(const char *s) {
    u64 n = 0;
    while (s[n]) n++;
    return n;
}

static char *put_num(char *p, i64 v) {
    char tmp[24];
    int n = 0;
    u64 u = v < 0 ? (u64)(-v) : (u64)v;
    if (v < 0) *p++ = '-';
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    while (n) *p++ = tmp[--n];
    return p;
}

static char *put_str(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}

static void write_all(i64 fd, const char *buf, u64 n) {
    while (n) {
        i64 w = sc(__NR_write, fd, (i64)buf, (i64)n, 0);
        if (w == -EINTR) continue;
        if (w <= 0) return;
        buf += w;
        n -= (u64)w;
    }
}

/* every child that has exited; blocks only when block != 0 */
static i64 reap(int block, i64 *status) {
    for (;;) {
        int st = 0;
        i64 r = sc(__NR_wait4, -1, (i64)&st, block ? 0 : WNOHANG, 0);
        if (r == -EINTR) continue;
        if (r > 0) *status = st;
        return r;
    }
}

static void record_exit(const char *path, i64 pid, i64 status) {
    char tmp[4096], buf[160], *p;
    struct ts now = {0, 0};
    u64 n = len(path);
    i64 fd;
    if (n + 5 > sizeof tmp) return;
    for (u64 i = 0; i < n; i++) tmp[i] = path[i];
    tmp[n] = '.'; tmp[n + 1] = 't'; tmp[n + 2] = 'm'; tmp[n + 3] = 'p'; tmp[n + 4] = 0;
    sc(__NR_clock_gettime, CLOCK_REALTIME, (i64)&now, 0, 0);
    p = put_str(buf, "{\"pid\": ");
    p = put_num(p, pid);
    p = put_str(p, ", \"status\": ");
    p = put_num(p, status);
    p = put_str(p, ", \"finished_at\": ");
    p = put_num(p, now.sec * 1000000000L + now.nsec);
    p = put_str(p, "}\n");
    fd = sc(__NR_openat, AT_FDCWD, (i64)tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    write_all(fd, buf, (u64)(p - buf));
    sc(__NR_close, fd, 0, 0, 0);
    sc(__NR_renameat, AT_FDCWD, (i64)tmp, AT_FDCWD, (i64)path);
}

static i64 read_pid(void) {
    char buf[32];
    u64 got = 0;
    i64 pid = 0;
    for (;;) {
        i64 r = sc(__NR_read, 3, (i64)(buf + got), (i64)(sizeof buf - got), 0);
        if (r == -EINTR) continue;
        if (r <= 0) break;
        got += (u64)r;
        if (got == sizeof buf) break;
    }
    sc(__NR_close, 3, 0, 0, 0);
    for (u64 i = 0; i < got && buf[i] >= '0' && buf[i] <= '9'; i++)
        pid = pid * 10 + (buf[i] - '0');
    return pid;
}

static void __attribute__((noreturn)) keeper(i64 argc, char **argv) {
    u64 blocked = (1UL << (1 - 1)) | (1UL << (2 - 1)) | (1UL << (3 - 1)) | (1UL << (10 - 1))
                  | (1UL << (12 - 1)) | (1UL << (13 - 1)) | (1UL << (15 - 1));
    struct ksigaction ign = {1 /* SIG_IGN */, 0, 0, 0};
    i64 pid, r, status = 0;
    if (argc < 3) die(2);
    sc(__NR_rt_sigprocmask, SIG_BLOCK, (i64)&blocked, 0, 8);
    sc(__NR_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0);
    pid = read_pid();
    if (pid <= 0) {
        while (reap(1, &status) > 0) {}
        die(1);
    }
    for (;;) {
        r = reap(1, &status);
        if (r == pid) break;
        if (r == -ECHILD) { status = 255 << 8; break; } /* never ours: recorded as 255 */
    }
    record_exit(argv[2], pid, status);
    sc(__NR_close, 4, 0, 0, 0);
    sc(__NR_rt_sigaction, SIGCHLD, (i64)&ign, 0, 8); /* orphans left behind: the kernel reaps */
    while (reap(0, &status) > 0) {}
    sc(__NR_rt_sigprocmask, SIG_UNBLOCK, (i64)&blocked, 0, 8);
    for (;;) sc(__NR_ppoll, 0, 0, 0, 0); /* sleeps until a signal ends us */
}

#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n"
        "  xor %rbp, %rbp\n  mov (%rsp), %rdi\n  lea 8(%rsp), %rsi\n"
        "  and $-16, %rsp\n  call keeper_main\n  hlt\n");
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n"
        "  ldr x0, [sp]\n  add x1, sp, #8\n  bl keeper_main\n");
#endif

void keeper_main(i64 argc, char **argv) __attribute__((used, noreturn));
void keeper_main(i64 argc, char **argv) {
    keeper(argc, argv);
    die(0);
}
