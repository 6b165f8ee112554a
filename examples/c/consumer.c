/* Receive N messages from an ipcfs mailbox and print them, one per line.
 *
 *     consumer MAILBOX_DIR N
 *
 * One open file of MAILBOX_DIR/.receive serves any number of messages: each
 * read() continues the current message, a read() returning 0 marks its end, and
 * the next read() takes (and, while the mailbox is empty, waits for) the next one.
 * The consumer stops after N messages without taking an (N+1)th.
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

int main(int argc, char **argv)
{
    if (argc != 3 || parse_count(argv[2]) < 0) {
        fprintf(stderr, "usage: %s MAILBOX_DIR N\n", argv[0]);
        return 2;
    }
    long n = parse_count(argv[2]);
    if (n == 0)
        return 0;

    char receive_path[PATH_MAX];
    if (snprintf(receive_path, sizeof receive_path, "%s/.receive", argv[1]) >= (int)sizeof receive_path) {
        fprintf(stderr, "%s: path too long: %s\n", argv[0], argv[1]);
        return 2;
    }
    int fd = open(receive_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], receive_path, strerror(errno));
        return 1;
    }

    /* A message is delivered whole, so its bytes can go straight to stdout as they
     * are read; only the last byte is remembered, to end every message with '\n'. */
    static char chunk[64 * 1024];
    char last = '\0'; /* last byte of the current message; '\0' while it is empty */
    long received = 0;
    while (received < n) {
        ssize_t got = read(fd, chunk, sizeof chunk); /* blocks while the mailbox is empty */
        if (got < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "%s: read %s: %s\n", argv[0], receive_path, strerror(errno));
            close(fd);
            return 1;
        }
        if (got > 0) {
            fwrite(chunk, 1, (size_t)got, stdout);
            last = chunk[got - 1];
            continue;
        }
        /* got == 0: end of this message; the next read() takes the next one */
        if (last != '\n')
            putchar('\n');
        fflush(stdout);
        last = '\0';
        received++;
    }
    close(fd);
    return ferror(stdout) ? 1 : 0;
}
