/* overnet: the CLI's compiled front, written by `python -m overnet.cli.launcher`.
 *
 * A Python start costs ~10 ms of every `overnet` call; most of `overnet run -d` was that.
 * This hands `run` and `ps` whole to the local agent: one POST /cli on its unix socket, the
 * body the command line after the global options ("ARG\0" each). The agent parses it with
 * the CLI's own code (cli/fast.py, api/cliroute.py) and answers 200 with "0\n" and what goes
 * to stdout, "1\n" and what goes to stderr, or "-\n": not a command line it takes (a
 * foreground run, --help, an option it does not know), nothing done.
 * The rest goes to the Python CLI beside this file (overnet-py), exec'd with the same
 * arguments: other commands, a user other than root, an agent it cannot reach or that lacks
 * the route, any failure here before the request went out.
 */
#include "agent_call.h"      /* in overnet/cfront/ */

#define FALLBACK "overnet-py"
#ifndef TIMEOUT_S
#define TIMEOUT_S 120           /* as the Python client waits for the agent */
#endif

/* How the launcher knows this file as its own (cli/launcher.py: MARK). */
__attribute__((used)) static const char mark[] = "overnet's lean launcher (compiled front)";

static int fallback(char **argv) {
    char path[4096];
    if (beside_me(FALLBACK, path, sizeof path)) {
        fprintf(stderr, "Error: overnet cannot find its own path: %s\n", strerror(errno));
        return 1;
    }
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, "Error: overnet cannot run %s: %s\n", path, strerror(errno));
    return 1;
}

/* The global options cli/fast.py takes (-H/--host, last wins): the index of the command, or
 * -1 for anything else (click then parses the line and says what is wrong). */
static int global_options(int argc, char **argv, const char **host) {
    int i = 1;
    while (i < argc && argv[i][0] == '-' && argv[i][1]) {
        const char *a = argv[i];
        if (!strcmp(a, "-H") || !strcmp(a, "--host")) {
            if (i + 1 >= argc) return -1;
            *host = argv[i + 1];
            i += 2;
        } else if (!strncmp(a, "--host=", 7)) {
            *host = a + 7;
            i++;
        } else if (!strncmp(a, "-H", 2)) {
            *host = a + 2;
            i++;
        } else {
            return -1;          /* "--", --help, --version, anything else */
        }
    }
    return i < argc ? i : -1;
}

/* client.socket_path: -H unix:///path, else $OVERNET_HOST, else the default socket; NULL
 * for anything else (the Python client says what is wrong with it). */
static const char *socket_path(const char *host) {
    const char *value = host && *host ? host : getenv("OVERNET_HOST");
    if (!value || !*value) return DEFAULT_SOCKET;
    if (!strncmp(value, "unix://", 7)) value += 7;
    return value[0] == '/' ? value : NULL;
}

int main(int argc, char **argv) {
    const char *host = NULL, *path, *text;
    struct buf body = {0}, ans = {0};
    size_t text_len;
    int cmd = global_options(argc, argv, &host);
    if (cmd < 0 || (strcmp(argv[cmd], "run") && strcmp(argv[cmd], "ps")) || geteuid() != 0 ||
        !(path = socket_path(host)))
        return fallback(argv);
    for (int i = cmd; i < argc; i++)
        if (append(&body, argv[i], strlen(argv[i]) + 1)) return fallback(argv);
    if (body.len > MAX_BODY) return fallback(argv);
    int fd = connect_agent(path, TIMEOUT_S);
    if (fd < 0) return fallback(argv);        /* the Python client says why */
    int done = post(fd, "/cli", &body, &ans);
    close(fd);
    if (done == CALL_LATE) {                  /* the agent may still be at it: not twice */
        fprintf(stderr, "Error: the overnet agent at %s did not answer in time\n", path);
        return 1;
    }
    int status = done == CALL_DONE ? status_answer(&ans, &text, &text_len) : -1;
    if (status == '0') return write_all(1, text, text_len, 0) ? 1 : 0;
    if (status == '1') {
        write_all(2, text, text_len, 0);
        return 1;
    }
    return fallback(argv);                    /* "-", an older agent, a broken answer */
}
