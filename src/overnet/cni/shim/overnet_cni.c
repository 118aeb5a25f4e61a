/* overnet-cni: the CNI plugin's fast path, compiled by `overnet cni install`.
 *
 * A Python plugin costs ~20-30 ms per call before its first request; this, a process start.
 * It hands the call whole to the local agent: one POST /cni on its unix socket, the body the
 * CNI_* variables ("NAME=value\0" each, then "\0") and then stdin (the network config). The
 * agent answers 200 with "0\n" or "1\n" (the exit status) and what goes to stdout.
 * The rest goes to the Python plugin beside this file (overnet-cni-python), exec'd with the
 * same stdin and environment: VERSION, the flannel type, an agent it cannot reach or that
 * lacks the route, a config this scan does not read plainly (escapes), any failure here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define FALLBACK "overnet-cni-python"
#define DEFAULT_SOCKET "/run/overnet/overnet.sock"
#define MAX_BODY (1 << 20)      /* the agent's limit on a request body (api/http.py) */
#ifndef TIMEOUT_S
#define TIMEOUT_S 60            /* as the Python plugin waits for the agent */
#endif

/* How `overnet cni install` knows this file as its own (install.py: MARK). */
__attribute__((used)) static const char mark[] =
    "overnet-cni shim, written by `overnet cni install`";

static const char *const env_names[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",
                                        "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"};
static const char *const versions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};

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

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* The spec's error result (SPEC.md, section 5): only for what fails here, before or instead
 * of the Python plugin. */
static int fail(const char *version, int code, const char *msg, const char *details) {
    printf("{\"cniVersion\": ");
    json_string(version);
    printf(", \"code\": %d, \"msg\": ", code);
    json_string(msg);
    printf(", \"details\": ");
    json_string(details);
    printf("}\n");
    return 1;
}

/* exec the Python plugin beside this executable, stdin (when read already) given back as a
 * memory file. Returns only on failure. */
static int fallback(const struct buf *in, const char *version) {
    char path[4096], why[4400];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - sizeof FALLBACK);
    if (n <= 0)
        return fail(version, 999, "overnet-cni cannot find its own path", strerror(errno));
    path[n] = '\0';
    strcpy(strrchr(path, '/') + 1, FALLBACK);     /* readlink gives an absolute path */
    if (in) {
        int fd = memfd_create("overnet-cni-stdin", 0);
        if (fd < 0 || write_all(fd, in->data, in->len, 0) ||
            lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) != 0)
            return fail(version, 5, "overnet-cni cannot pass its input on", strerror(errno));
        if (fd != 0) close(fd);
    }
    char *argv[] = {path, NULL};
    execv(path, argv);
    snprintf(why, sizeof why, "%s: %s", path, strerror(errno));
    return fail(version, 999, "overnet-cni cannot run its Python plugin", why);
}

/* --- a minimal scan of the config's top-level keys (the agent parses it fully) ---------- */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* p at a '"': the position after the closing quote, or NULL. *escaped tells of a backslash. */
static const char *string_end(const char *p, const char *end, int *escaped) {
    *escaped = 0;
    for (p++; p < end; p++) {
        if (*p == '"') return p + 1;
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\') { *escaped = 1; p++; }
    }
    return NULL;
}

/* Any JSON value at p: its end, or NULL. Nested values are skipped by depth. */
static const char *value_end(const char *p, const char *end) {
    int depth = 0, escaped;
    do {
        p = skip_ws(p, end);
        if (p >= end) return NULL;
        if (*p == '"') {
            if (!(p = string_end(p, end, &escaped))) return NULL;
            continue;
        }
        if (*p == '{' || *p == '[') depth++;
        else if (*p == '}' || *p == ']') { if (--depth < 0) return NULL; }
        else if (depth == 0) {     /* a number or a literal */
            while (p < end && !strchr(",}] \t\r\n", *p)) p++;
            return p;
        }
        p++;
    } while (depth > 0);
    return p;
}

/* A plain string value (no escapes) copied into out; -1 if it is anything else or too long. */
static int plain_string(const char *v, const char *vend, char *out, size_t size) {
    int escaped;
    if (*v != '"' || string_end(v, vend, &escaped) != vend || escaped) return -1;
    size_t len = (size_t)(vend - v) - 2;
    if (len >= size) return -1;
    memcpy(out, v + 1, len);
    out[len] = '\0';
    return 0;
}

struct conf { char type[64], socket[sizeof(((struct sockaddr_un *)0)->sun_path)], version[16]; };

static int scan_config(const char *p, const char *end, struct conf *c) {
    p = skip_ws(p, end);
    if (p >= end || *p++ != '{') return -1;
    p = skip_ws(p, end);
    if (p < end && *p == '}') return 0;
    for (;;) {
        int escaped;
        const char *key = p, *key_end = p < end && *p == '"' ? string_end(p, end, &escaped) : 0;
        if (!key_end || escaped) return -1;       /* escapes: for the full parser */
        size_t klen = (size_t)(key_end - key);
        p = skip_ws(key_end, end);
        if (p >= end || *p++ != ':') return -1;
        const char *v = skip_ws(p, end);
        if (!(p = value_end(v, end))) return -1;
        if (klen == 6 && !memcmp(key, "\"type\"", 6) && plain_string(v, p, c->type, sizeof c->type))
            return -1;
        if (klen == 13 && !memcmp(key, "\"agentSocket\"", 13) &&
            (plain_string(v, p, c->socket, sizeof c->socket) || c->socket[0] != '/'))
            return -1;
        if (klen == 12 && !memcmp(key, "\"cniVersion\"", 12))
            plain_string(v, p, c->version, sizeof c->version);
        p = skip_ws(p, end);
        if (p < end && *p == ',') { p = skip_ws(p + 1, end); continue; }
        return p < end && *p == '}' ? 0 : -1;
    }
}

/* --- the request to the agent --------------------------------------------------------- */

static int connect_agent(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = TIMEOUT_S};
    strcpy(addr.sun_path, path);              /* its length was checked by the scan */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) return fd;
    close(fd);
    return -1;
}

static int build_body(struct buf *body, const struct buf *in) {
    for (size_t i = 0; i < sizeof env_names / sizeof *env_names; i++) {
        const char *value = getenv(env_names[i]);
        if (value && (append(body, env_names[i], strlen(env_names[i])) ||
                      append(body, "=", 1) || append(body, value, strlen(value) + 1)))
            return -1;
    }
    return append(body, "", 1) || append(body, in->data, in->len) ? -1 : 0;
}

/* The agent's answer: its exit status (0 or 1) with *out, *out_len set to what goes to
 * stdout; -1 when it is not an answer of the /cni route (e.g. an older agent). */
static int parse_answer(struct buf *ans, const char **out, size_t *out_len) {
    char *head_end, *length;
    if (grow(ans, 1)) return -1;
    ans->data[ans->len] = '\0';
    if (strncmp(ans->data, "HTTP/1.1 200 ", 13) || !(head_end = strstr(ans->data, "\r\n\r\n")))
        return -1;
    *head_end = '\0';
    length = strstr(ans->data, "\r\nContent-Length: ");
    char *body = head_end + 4;
    size_t len = ans->len - (size_t)(body - ans->data);
    if (!length || strtoul(length + 18, NULL, 10) != len || len < 2 || body[1] != '\n' ||
        (body[0] != '0' && body[0] != '1'))
        return -1;
    *out = body + 2;
    *out_len = len - 2;
    return body[0] - '0';
}

int main(void) {
    struct buf in = {0}, req = {0}, ans = {0};
    struct conf c = {.socket = DEFAULT_SOCKET, .version = "1.1.0"};
    const char *command = getenv("CNI_COMMAND"), *version = "1.1.0", *out;
    char head[128];
    size_t out_len;
    if (!command || !strcmp(command, "VERSION"))
        return fallback(NULL, version);       /* stdin untouched: VERSION may have none */
    if (read_all(0, &in, NULL))
        return fail(version, 5, "overnet-cni cannot read its network config", strerror(errno));
    int scanned = scan_config(in.data, in.data + in.len, &c);
    for (size_t i = 0; i < sizeof versions / sizeof *versions; i++)
        if (!strcmp(c.version, versions[i])) version = versions[i];
    if (scanned || !strcmp(c.type, "flannel") || build_body(&req, &in) || req.len > MAX_BODY)
        return fallback(&in, version);
    int fd = connect_agent(c.socket);
    if (fd < 0)
        return fallback(&in, version);        /* DEL kept, ADD asked to retry: in Python */
    int n = snprintf(head, sizeof head, "POST /cni HTTP/1.1\r\nHost: localhost\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n", req.len);
    int status = -1, late = 0;
    if (!write_all(fd, head, (size_t)n, 1) && !write_all(fd, req.data, req.len, 1)) {
        if (!read_all(fd, &ans, whole_answer)) status = parse_answer(&ans, &out, &out_len);
        else late = errno == EAGAIN || errno == EWOULDBLOCK;
    }
    close(fd);
    /* An agent still busy with the call: running it again in Python could do it twice. A
     * DEL may run again (it is idempotent, and kept for later if the agent is away). */
    if (late && strcmp(command, "DEL"))
        return fail(version, 11, "the overnet agent did not answer in time", c.socket);
    if (status < 0)
        return fallback(&in, version);
    if (write_all(1, out, out_len, 0)) return 1;
    return status;
}
