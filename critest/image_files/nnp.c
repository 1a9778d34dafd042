/* nnp: prints the effective uid it runs with.
 *
 * Installed setuid root in the nonewprivs image: started as uid 1000 it prints
 * "Effective uid: 0" unless no_new_privs stopped the setuid bit from working.
 */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
