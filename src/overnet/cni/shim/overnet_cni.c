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
#include "agent_call.h"      /* in overnet/cfront/ */

#include <sys/mman.h>

#define FALLBACK "overnet-cni-python"
#ifndef TIMEOUT_S
#define TIMEOUT_S 60            /* as the Python plugin waits for the agent */
#endif

/* How `overnet cni install` knows this file as its own (install.py: MARK). */
__attribute__((used)) static const char mark[] =
    "overnet-cni shim, written by `overnet cni install`";

static const char *const env_names[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",
                                        "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"};
static const char *const versions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};

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
    if (beside_me(FALLBACK, path, sizeof path))
        return fail(version, 999, "overnet-cni cannot find its own path", strerror(errno));
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

static int build_body(struct buf *body, const struct buf *in) {
    for (size_t i = 0; i < sizeof env_names / sizeof *env_names; i++) {
        const char *value = getenv(env_names[i]);
        if (value && (append(body, env_names[i], strlen(env_names[i])) ||
                      append(body, "=", 1) || append(body, value, strlen(value) + 1)))
            return -1;
    }
    return append(body, "", 1) || append(body, in->data, in->len) ? -1 : 0;
}

int main(void) {
    struct buf in = {0}, req = {0}, ans = {0};
    struct conf c = {.socket = DEFAULT_SOCKET, .version = "1.1.0"};
    const char *command = getenv("CNI_COMMAND"), *version = "1.1.0", *out;
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
    int fd = connect_agent(c.socket, TIMEOUT_S);
    if (fd < 0)
        return fallback(&in, version);        /* DEL kept, ADD asked to retry: in Python */
    int done = post(fd, "/cni", &req, &ans), status = -1;
    close(fd);
    /* An agent still busy with the call: running it again in Python could do it twice. A
     * DEL may run again (it is idempotent, and kept for later if the agent is away). */
    if (done == CALL_LATE && strcmp(command, "DEL"))
        return fail(version, 11, "the overnet agent did not answer in time", c.socket);
    if (done == CALL_DONE) status = status_answer(&ans, &out, &out_len);
    if (status != '0' && status != '1')
        return fallback(&in, version);
    if (write_all(1, out, out_len, 0)) return 1;
    return status - '0';
}
