/* One HTTP request to the local agent on its unix socket, for the compiled fronts
 * (cni/shim/overnet_cni.c, cli/front/overnet.c): they do their one hot call here and hand
 * everything else to the Python program beside them. */
#ifndef OVERNET_AGENT_CALL_H
#define OVERNET_AGENT_CALL_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/overnet/overnet.sock"
#define MAX_BODY (1 << 20)      /* the agent's limit on a request body (api/http.py) */

struct buf { char *data; size_t len, cap; };

static int grow(struct buf *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 8192;
    while (cap < b->len + more) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int append(struct buf *b, const void *data, size_t len) {
    if (grow(b, len)) return -1;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* Whether b holds a whole HTTP answer by its Content-Length (b->data is '\0'-ended). */
static int whole_answer(struct buf *b) {
    char *end = strstr(b->data, "\r\n\r\n"), *length;
    if (!end) return 0;
    *end = '\0';
    length = strstr(b->data, "\r\nContent-Length: ");
    *end = '\r';
    return length && b->len - (size_t)(end + 4 - b->data) >= strtoul(length + 18, NULL, 10);
}

/* Read fd to its end, or (with whole) until whole(b). The agent's answer is read by its
 * length, not only to the end: the agent closes the connection when its loop next gets
 * there, which may be after other work (the reconcile this very call asked for). */
static int read_all(int fd, struct buf *b, int (*whole)(struct buf *)) {
    for (;;) {
        if (grow(b, 65536)) return -1;
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len - 1);   /* room for a '\0' */
        if (n == 0) return 0;
        if (n < 0 && errno != EINTR) return -1;
        if (n <= 0) continue;
        b->len += (size_t)n;
        b->data[b->len] = '\0';
        if (whole && whole(b)) return 0;
    }
}

/* To a socket with send(): an agent gone mid-request must not kill us with SIGPIPE. */
static int write_all(int fd, const char *data, size_t len, int sock) {
    while (len > 0) {
        ssize_t n = sock ? send(fd, data, len, MSG_NOSIGNAL) : write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int connect_agent(const char *path, int timeout_s) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = timeout_s};
    if (strlen(path) >= sizeof addr.sun_path) return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) return fd;
    close(fd);
    return -1;
}

enum { CALL_DONE = 0, CALL_UNREACHABLE = -1, CALL_LATE = -2, CALL_FAILED = -3 };

/* POST body to route on the connected fd and read the whole answer into ans: CALL_DONE, or
 * CALL_LATE when the agent did not answer within the socket's timeout (it may still be at
 * work on the call), or CALL_FAILED. */
static int post(int fd, const char *route, const struct buf *body, struct buf *ans) {
    char head[256];
    int n = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: localhost\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n", route, body->len);
    if (n < 0 || (size_t)n >= sizeof head || write_all(fd, head, (size_t)n, 1) ||
        write_all(fd, body->data, body->len, 1))
        return CALL_FAILED;
    if (!read_all(fd, ans, whole_answer)) return CALL_DONE;
    return errno == EAGAIN || errno == EWOULDBLOCK ? CALL_LATE : CALL_FAILED;
}

/* A 200 answer whose body is "S\n" then text (S one character: the routes' status): S, with
 * *text and *text_len set; -1 for anything else (e.g. an older agent without the route). */
static int status_answer(struct buf *ans, const char **text, size_t *text_len) {
    char *head_end, *length;
    if (grow(ans, 1)) return -1;
    ans->data[ans->len] = '\0';
    if (strncmp(ans->data, "HTTP/1.1 200 ", 13) || !(head_end = strstr(ans->data, "\r\n\r\n")))
        return -1;
    *head_end = '\0';
    length = strstr(ans->data, "\r\nContent-Length: ");
    *head_end = '\r';
    char *body = head_end + 4;
    size_t len = ans->len - (size_t)(body - ans->data);
    if (!length || strtoul(length + 18, NULL, 10) != len || len < 2 || body[1] != '\n')
        return -1;
    *text = body + 2;
    *text_len = len - 2;
    return (unsigned char)body[0];
}

/* The path of `name` beside this executable (readlink gives an absolute path). */
static int beside_me(const char *name, char *path, size_t size) {
    ssize_t n = readlink("/proc/self/exe", path, size - strlen(name) - 1);
    if (n <= 0) return -1;
    path[n] = '\0';
    strcpy(strrchr(path, '/') + 1, name);
    return 0;
}

#endif
