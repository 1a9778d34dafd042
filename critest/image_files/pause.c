/* pause: the pod sandbox's placeholder process (our own minimal version).
 *
 * Sleeps until SIGINT or SIGTERM, reaps children it inherits as PID 1.
 * Built at image build time by critest/images; PAUSE_VERSION tells the
 * pause:3.9 and pause:3.10 images apart (`pause -v`).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PAUSE_VERSION
#define PAUSE_VERSION "unknown"
#endif

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    struct sigaction sa;

    if (argc == 2 && strcmp(argv[1], "-v") == 0) {
        printf("pause %s\n", PAUSE_VERSION);
        return 0;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;)
        pause();
}
