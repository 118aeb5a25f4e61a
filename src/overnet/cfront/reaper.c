/* overnet-reaper: runtime/reaper.py compiled, the loop of a container's waiter and init.
 *
 * Both start as forks of the agent (or the CLI) and exec a small program: a fork that stayed
 * would keep a copy-on-write snapshot of the agent's heap alive, one per container. A Python
 * interpreter costs ~8 ms of CPU to start and ~3.5 MB per process (two per container); this,
 * a process start and ~0.1 MB. The Python one (runtime/supervise.py) runs where this was not
 * built. Same arguments, same behaviour:
 *
 *     overnet-reaper CHILD_PID REAP_ALL(0|1) NAME
 *
 * Pass every signal (blocked by the parent before the fork: the mask survives the exec) on to
 * CHILD_PID until it exits, then exit with its status as a shell reports it (128+N when killed
 * by signal N); the init (REAP_ALL=1) also reaps every orphan that ends up with it. A signal
 * the kernel sent to the whole foreground process group (si_code SI_KERNEL: the terminal's
 * ^C) reached the command too and is not passed on again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int not_passed(int sig) {
    return sig == SIGKILL || sig == SIGSTOP || sig == SIGCHLD || sig == SIGSEGV ||
           sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP || sig == SIGSYS;
}

/* Reap what has ended; 1 with *status set if `child` has. */
static int reap(pid_t child, int reap_all, int *status) {
    int found = 0, st;
    for (;;) {
        pid_t pid = waitpid(reap_all ? -1 : child, &st, WNOHANG);
        if (pid < 0 && errno == EINTR) continue;
        if (pid <= 0) return found;
        if (pid == child) {
            *status = st;
            found = 1;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 4) _exit(255);
    char *end;
    long child = strtol(argv[1], &end, 10);
    if (*end || child <= 0 || (strcmp(argv[2], "0") && strcmp(argv[2], "1"))) _exit(255);
    int reap_all = argv[2][0] == '1';
    int fd = open("/proc/self/comm", O_WRONLY | O_CLOEXEC);   /* what ps shows */
    if (fd >= 0) {
        ssize_t ignored = write(fd, argv[3], strnlen(argv[3], 15));
        (void)ignored;
        close(fd);
    }
    sigset_t waited;
    sigemptyset(&waited);
    for (int sig = 1; sig < SIGRTMIN; sig++)
        if (!not_passed(sig)) sigaddset(&waited, sig);
    sigaddset(&waited, SIGCHLD);
    for (;;) {
        siginfo_t info;
        if (sigwaitinfo(&waited, &info) < 0) {
            if (errno == EINTR) continue;
            _exit(255);
        }
        if (info.si_signo == SIGCHLD) {
            int status;
            if (reap((pid_t)child, reap_all, &status))
                _exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
        } else if (info.si_code != SI_KERNEL) {
            kill((pid_t)child, info.si_signo);
        }
    }
}
