/* A guest-side AF_VSOCK tool for the tests (busybox has none), built static by the test:
 *   vsock listen PORT          accept one connection and echo it back until EOF
 *   vsock connect CID PORT MSG send MSG, half-close, print what comes back
 *   vsock uds-reply PATH       the host side of a guest connection: listen on the Unix
 *                              socket PATH, read one connection to EOF, answer "reply:"
 *                              and what it read, print what it read
 */
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(const char *what) {
    perror(what);
    return 1;
}

static int uds_reply(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    char buf[4096];
    ssize_t n, got = 0;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 1))
        return fail("uds bind/listen");
    int c = accept(s, NULL, NULL);
    if (c < 0)
        return fail("uds accept");
    while (got < (ssize_t)sizeof buf - 1 && (n = read(c, buf + got, sizeof buf - 1 - got)) > 0)
        got += n;
    buf[got] = 0;
    if (write(c, "reply:", 6) != 6 || write(c, buf, got) != got)
        return fail("uds write");
    close(c);
    printf("uds got %s\n", buf);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK};
    char buf[65536];
    ssize_t n;
    if (argc == 3 && strcmp(argv[1], "uds-reply") == 0)
        return uds_reply(argv[2]);
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
    fprintf(stderr, "usage: vsock listen PORT | vsock connect CID PORT MSG | vsock uds-reply PATH\n");
    return 2;
}
