/* pycri_vspawn: start the exec helper without copying the shim (x86_64), in C.
 *
 * Written for pycri. A fork of the monitor copies its page tables, its parent then takes a
 * copy-on-write fault on every page it writes until the child's execve, and the execve tears
 * the copy down again: 2-4 ms per exec at 250 pods here. This is vfork done with clone3:
 * CLONE_VM | CLONE_VFORK (the child borrows the shim's memory, the shim waits until the
 * child's execve or exit) | CLONE_INTO_CGROUP (born in the container's cgroup of the unified
 * hierarchy, no migration). The child runs on a stack of its own (a system call, not a
 * function call, starts it, so it never returns through the shim's stack), puts fds[i] on
 * fd i, and execs `path`; it touches nothing of the shim's but errno and the struct it
 * writes a failed execve's errno to. All signals are blocked around the clone (the child
 * must run none of the shim's handlers): the exec helper unblocks them and resets their
 * dispositions first thing. The shim's pid_for_children decides the child's pid namespace.
 * Loaded with ctypes by runtime/shim/spawn.py; built by runtime.cbuild.
 *
 *   long pycri_vspawn(path, argv, envp, fds, nfds, cgroup_fd (-1: none), int *err)
 *     > 0: the child's pid, exec'd;  -1: no child, *err = errno of clone3 (ENOSYS, EPERM,
 *     E2BIG: no clone3; EBUSY: the cgroup is an inner node; ...);  < -1: the child could not
 *     exec (*err), it has exited: reap pid -(ret + 2).
 */
#define _GNU_SOURCE
#include <errno.h>
#if defined(__x86_64__)
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct spawn { const char *path; char *const *argv; char *const *envp; const int *fds; int nfds; volatile int err; };
struct cargs { uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup; };

static void __attribute__((noreturn, used)) child_main(struct spawn *s) {
    int high[16];
    for (int i = 0; i < s->nfds; i++) {
        high[i] = fcntl(s->fds[i], F_DUPFD_CLOEXEC, 100);
        if (high[i] < 0) { s->err = errno; _exit(127); }
    }
    for (int i = 0; i < s->nfds; i++)
        if (dup2(high[i], i) < 0) { s->err = errno; _exit(127); }
    execve(s->path, s->argv, s->envp);
    s->err = errno ? errno : ENOEXEC;
    _exit(127);
}

#define STACK (64 * 1024)
static void *stack;

long pycri_vspawn(const char *path, char *const *argv, char *const *envp, const int *fds,
                  int nfds, int cgroup_fd, int *err) {
    if (nfds > 16) { *err = EINVAL; return -1; }
    if (!stack) {
        stack = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) { stack = NULL; *err = errno; return -1; }
    }
    struct spawn s = {path, argv, envp, fds, nfds, 0};
    struct cargs ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = CLONE_VM | CLONE_VFORK | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0);
    ca.exit_signal = SIGCHLD;
    ca.stack = (uint64_t)(uintptr_t)stack;
    ca.stack_size = STACK;
    ca.cgroup = cgroup_fd >= 0 ? (uint64_t)cgroup_fd : 0;
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    long ret;
    struct spawn *sp = &s;
    void (*fn)(struct spawn *) = child_main;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "mov %[arg], %%rdi\n\t"
        "call *%[fn]\n\t"
        "hlt\n"
        "1:\n"
        : "=a"(ret)
        : "a"((long)SYS_clone3), "D"(&ca), "S"(sizeof ca), [fn] "r"(fn), [arg] "r"(sp)
        : "rcx", "r11", "memory");
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (ret < 0) { *err = (int)-ret; return -1; }
    if (s.err) { *err = s.err; return -ret - 2; }   /* exec failed: the child exited; reap it */
    *err = 0;
    return ret;
}
#else
long pycri_vspawn(const char *path, char *const *argv, char *const *envp, const int *fds,
                  int nfds, int cgroup_fd, int *err) {
    (void)path; (void)argv; (void)envp; (void)fds; (void)nfds; (void)cgroup_fd;
    *err = ENOSYS;   /* the caller forks instead */
    return -1;
}
#endif
