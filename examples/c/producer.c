/* Send N numbered jobs ("job 1" ... "job N") to an ipcfs mailbox.
 *
 *     producer MAILBOX_DIR N
 *
 * Everything written between one open() and close() of MAILBOX_DIR/.send is one
 * message, delivered atomically at close(): a receiver never sees half of it.
 * close() is therefore where a send completes, and its result is checked like
 * that of write() (a full mailbox opened with O_NONBLOCK reports EAGAIN there).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Parses a non-negative decimal count; returns -1 if ARG is not one. */
static long parse_count(const char *arg)
{
    char *end;
    errno = 0;
    long n = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || n < 0)
        return -1;
    return n;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Sends one message: one open, one write, one close. Returns 0 or -1 (errno set). */
static int send_message(const char *send_path, const char *payload, size_t len)
{
    int fd = open(send_path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (write_all(fd, payload, len) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return close(fd); /* the message is delivered here */
}

int main(int argc, char **argv)
{
    if (argc != 3 || parse_count(argv[2]) < 0) {
        fprintf(stderr, "usage: %s MAILBOX_DIR N\n", argv[0]);
        return 2;
    }
    long n = parse_count(argv[2]);

    char send_path[PATH_MAX];
    if (snprintf(send_path, sizeof send_path, "%s/.send", argv[1]) >= (int)sizeof send_path) {
        fprintf(stderr, "%s: path too long: %s\n", argv[0], argv[1]);
        return 2;
    }

    for (long i = 1; i <= n; i++) {
        char payload[32];
        int len = snprintf(payload, sizeof payload, "job %ld\n", i);
        if (send_message(send_path, payload, (size_t)len) != 0) {
            fprintf(stderr, "%s: sending job %ld to %s: %s\n", argv[0], i, send_path, strerror(errno));
            return 1;
        }
    }
    return 0;
}
