/* Wait on several ipcfs mailboxes at once with epoll and print messages as they arrive.
 *
 *     epoll_wait -n N MAILBOX_DIR [MAILBOX_DIR ...]
 *
 * Each mailbox's .receive is opened once with O_NONBLOCK and added to one epoll
 * instance: it reports EPOLLIN while a message is waiting. On each readiness event
 * one whole message is taken and printed as "MAILBOX: payload" (one trailing newline
 * of the payload dropped); the program exits after N messages. If another receiver
 * was faster, the read finds the mailbox empty and fails with EAGAIN: that event is
 * skipped. Level-triggered epoll reports a mailbox again while messages remain.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

struct mailbox {
    const char *name; /* last path component, NAME_LEN bytes (not NUL-terminated) */
    int name_len;
    int fd;
};

struct buffer {
    char *data;
    size_t len, cap;
};

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

/* The mailbox's name: the last component of PATH, ignoring trailing slashes. */
static void set_name(struct mailbox *box, const char *path)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && path[start - 1] != '/')
        start--;
    box->name = path + start;
    box->name_len = (int)(end - start);
}

static int reserve(struct buffer *buf, size_t extra)
{
    if (buf->cap - buf->len >= extra)
        return 0;
    size_t cap = buf->cap ? buf->cap : 64 * 1024;
    while (cap - buf->len < extra)
        cap *= 2;
    char *data = realloc(buf->data, cap);
    if (!data)
        return -1;
    buf->data = data;
    buf->cap = cap;
    return 0;
}

/* Takes one whole message from a non-blocking .receive fd into BUF.
 * Returns 1 with the message in BUF, 0 if the mailbox was empty (EAGAIN before
 * the first byte), -1 on error (errno set). */
static int take_one(int fd, struct buffer *buf)
{
    buf->len = 0;
    int started = 0;
    for (;;) {
        if (reserve(buf, 64 * 1024) != 0)
            return -1;
        ssize_t got = read(fd, buf->data + buf->len, buf->cap - buf->len);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN && !started)
                return 0;
            return -1; /* EAGAIN mid-message is not expected: a message is delivered whole */
        }
        if (got == 0) /* end of message */
            return 1;
        started = 1;
        buf->len += (size_t)got;
    }
}

int main(int argc, char **argv)
{
    long n = -1;
    int opt;
    while ((opt = getopt(argc, argv, "n:")) != -1) {
        if (opt != 'n' || (n = parse_count(optarg)) < 0) {
            n = -1;
            break;
        }
    }
    if (n < 0 || optind >= argc) {
        fprintf(stderr, "usage: %s -n N MAILBOX_DIR [MAILBOX_DIR ...]\n", argv[0]);
        return 2;
    }

    int count = argc - optind;
    struct mailbox *boxes = calloc((size_t)count, sizeof *boxes);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!boxes || epfd < 0) {
        perror("epoll_wait: setup");
        return 1;
    }
    int status = 0;
    int opened = 0;
    for (; opened < count; opened++) {
        struct mailbox *box = &boxes[opened];
        const char *dir = argv[optind + opened];
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/.receive", dir) >= (int)sizeof path) {
            fprintf(stderr, "epoll_wait: path too long: %s\n", dir);
            status = 2;
            goto out;
        }
        set_name(box, dir);
        box->fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (box->fd < 0) {
            fprintf(stderr, "epoll_wait: %s: %s\n", path, strerror(errno));
            status = 1;
            goto out;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = box};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, box->fd, &ev) != 0) {
            fprintf(stderr, "epoll_wait: epoll_ctl %s: %s\n", path, strerror(errno));
            close(box->fd);
            status = 1;
            goto out;
        }
    }
    fputs("epoll_wait: waiting on ", stderr);
    for (int i = 0; i < count; i++)
        fprintf(stderr, "%s%.*s", i ? ", " : "", boxes[i].name_len, boxes[i].name);
    fputc('\n', stderr);

    struct buffer msg = {0};
    long seen = 0;
    while (seen < n) {
        struct epoll_event events[16];
        int ready = epoll_wait(epfd, events, 16, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait: epoll_wait");
            status = 1;
            break;
        }
        for (int i = 0; i < ready && seen < n; i++) {
            struct mailbox *box = events[i].data.ptr;
            int r = take_one(box->fd, &msg);
            if (r < 0) {
                fprintf(stderr, "epoll_wait: read %.*s: %s\n", box->name_len, box->name, strerror(errno));
                status = 1;
                seen = n;
                break;
            }
            if (r == 0) /* another receiver took it first */
                continue;
            size_t len = msg.len;
            if (len > 0 && msg.data[len - 1] == '\n')
                len--;
            printf("%.*s: ", box->name_len, box->name);
            fwrite(msg.data, 1, len, stdout);
            putchar('\n');
            fflush(stdout);
            seen++;
        }
    }
    free(msg.data);

out:
    for (int i = 0; i < opened; i++)
        close(boxes[i].fd);
    close(epfd);
    free(boxes);
    return status;
}
