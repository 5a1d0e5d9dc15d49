/* A guest-side AF_VSOCK tool for the tests (busybox has none), built static by the test:
 *   vsock listen PORT          accept one connection and echo it back until EOF
 *   vsock connect CID PORT MSG send MSG, half-close, print what comes back
 */
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what) {
    perror(what);
    return 1;
}

int main(int argc, char **argv) {
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK};
    char buf[65536];
    ssize_t n;
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0)
        return fail("socket");
    if (argc == 3 && strcmp(argv[1], "listen") == 0) {
        addr.svm_cid = VMADDR_CID_ANY;
        addr.svm_port = atoi(argv[2]);
        if (bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 1))
            return fail("bind/listen");
        printf("listening on %u\n", addr.svm_port);
        fflush(stdout);
        int c = accept(s, NULL, NULL);
        if (c < 0)
            return fail("accept");
        long total = 0;
        while ((n = read(c, buf, sizeof buf)) > 0) {
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(c, buf + off, n - off);
                if (w <= 0)
                    return fail("write");
                off += w;
            }
            total += n;
        }
        printf("echoed %ld bytes\n", total);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "connect") == 0) {
        addr.svm_cid = atoi(argv[2]);
        addr.svm_port = atoi(argv[3]);
        if (connect(s, (struct sockaddr *)&addr, sizeof addr))
            return fail("connect");
        if (write(s, argv[4], strlen(argv[4])) != (ssize_t)strlen(argv[4]))
            return fail("write");
        shutdown(s, SHUT_WR);
        while ((n = read(s, buf, sizeof buf - 1)) > 0) {
            buf[n] = 0;
            fputs(buf, stdout);
        }
        putchar('\n');
        return 0;
    }
    fprintf(stderr, "usage: vsock listen PORT | vsock connect CID PORT MSG\n");
    return 2;
}
