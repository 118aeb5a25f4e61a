"""The `overnet` console script: a lean path for the hot commands, the click CLI for the rest.

(In front of this, when a C compiler was there at set-up, the compiled `overnet`
(cfront/overnet.c) has the agent run `run -d` and `ps` with this very code, in-process
(api/cliroute.py), and sparing the Python start; it execs this script for everything else.)

`overnet run -d` is mostly the CLI's own start-up: importing click and the command tree costs
more than the agent's work. This dispatcher handles `run`, `exec` and `ps` with a tiny parser
and the raw HTTP client (api/client.py, standard library only) and hands everything else to
the click CLI (cli/main.py): other commands, --help and --version, and any argument list it does
not recognise exactly (an unknown or malformed option), so click alone produces those error
messages. What it handles behaves as the click command does: same output, same
"Error: ..." line on stderr, same exit code. main.py's commands call the helpers below, so
both paths share one implementation.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing costs a CLI call ~10 ms
    from typing import Any

HOT = ("run", "exec", "ps")
ROOT_ONLY = ("agent", "sandbox", "run", "exec")


class Fail(Exception):
    """An error the command reports as one `Error: ...` line, exit code 1."""


class Fallback(Exception):
    """Not a command line this parser knows exactly: click parses it (and says what is
    wrong)."""


# --- options -----------------------------------------------------------------------------------

# option string -> (destination, takes a value, may repeat); the same table click declares.
GLOBAL = {"-H": ("host", True, False), "--host": ("host", True, False)}
RUN = {"-d": ("detach", False, False), "--detach": ("detach", False, False),
       "-i": ("interactive", False, False), "--interactive": ("interactive", False, False),
       "-t": ("tty", False, False), "--tty": ("tty", False, False),
       "--rm": ("auto_remove", False, False), "--name": ("name", True, False),
       "--net": ("net", True, False), "--network": ("net", True, False),
       "--publish-service": ("publish_service", True, False),
       "--link": ("links", True, True), "-e": ("env", True, True), "--env": ("env", True, True),
       "--privileged": ("privileged", False, False)}
EXEC = {k: RUN[k] for k in ("-i", "--interactive", "-t", "--tty")}
PS = {"-a": ("show_all", False, False), "--all": ("show_all", False, False),
      "-q": ("quiet", False, False), "--quiet": ("quiet", False, False)}


def _store(opts: dict, spec: tuple, value: Any) -> None:
    dest, _, multiple = spec
    if multiple:
        opts.setdefault(dest, []).append(value)
    else:
        opts[dest] = value


def _long(arg: str, table: dict, rest: list[str], opts: dict) -> None:
    name, eq, value = arg.partition("=")
    spec = table.get(name)
    if spec is None or (eq and not spec[1]):
        raise Fallback
    if spec[1] and not eq:
        if not rest:
            raise Fallback
        value = rest.pop(0)
    _store(opts, spec, value if spec[1] else True)


def _short(arg: str, table: dict, rest: list[str], opts: dict) -> None:
    """`-d`, `-dit`, `-e K=V`, `-eK=V`: click's rules for short options."""
    i = 1
    while i < len(arg):
        spec = table.get("-" + arg[i])
        if spec is None:
            raise Fallback
        if not spec[1]:
            _store(opts, spec, True)
            i += 1
            continue
        value = arg[i + 1:]
        if not value:
            if not rest:
                raise Fallback
            value = rest.pop(0)
        _store(opts, spec, value)
        return


def parse(argv: list[str], table: dict) -> tuple[dict, list[str]]:
    """Options up to the first positional argument (click's allow_interspersed_args=False)
    or `--`; returns (options, the remaining arguments verbatim)."""
    rest = list(argv)
    opts: dict = {}
    while rest:
        arg = rest[0]
        if arg == "--":
            rest.pop(0)
            break
        if not arg.startswith("-") or arg == "-":
            break
        rest.pop(0)
        if arg in ("-h", "--help"):
            raise Fallback
        if arg.startswith("--"):
            _long(arg, table, rest, opts)
        else:
            _short(arg, table, rest, opts)
    return opts, rest


# --- the commands (main.py's click commands call these too) ------------------------------------

def _client(host: str | None):
    from ..api.client import ApiError, Client
    try:
        return Client(host)
    except ApiError as e:
        raise Fail(e.message) from None


def call(host: str | None, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
    from ..api.client import ApiError
    try:
        return getattr(_client(host), method)(path, *args, **kwargs)
    except ApiError as e:
        raise Fail(e.message) from None


def run_body(detach: bool, interactive: bool, tty: bool, auto_remove: bool, name: str | None,
             net: str | None, publish_service: str | None, links: list[str], env: list[str],
             cmd: list[str], privileged: bool = False) -> dict:
    """The POST /containers body of `overnet run`; Fail on a bad --env."""
    environ = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Fail(f"invalid --env {item!r}: expected KEY=VALUE")
        environ[key] = value
    return {"name": name, "net": net, "cmd": list(cmd) or ["/bin/sh"], "detach": detach,
            "rm": auto_remove, "tty": tty, "interactive": interactive,
            "publish_service": publish_service, "links": list(links), "env": environ,
            "privileged": privileged}


def foreground(host: str | None, c: dict, interactive: bool) -> int:
    """The CLI runs a foreground container itself, so `-it` gets this very terminal."""
    from ..api.client import ApiError
    from ..runtime import process
    spec = process.ContainerSpec(**c["Spec"])
    cid = c["Id"]

    def started(pid: int) -> None:
        call(host, "post", f"/containers/{cid}/started", {"pid": pid})

    try:
        code = process.run_foreground(spec, on_start=started, interactive=interactive)
    except Exception as e:
        call(host, "delete", f"/containers/{cid}", force="1")
        raise Fail(f"starting {c['Name']} failed: {e}") from None
    try:
        if c["Config"]["AutoRemove"]:
            _client(host).delete(f"/containers/{cid}", force="1")
        else:
            _report_exit(host, cid, code)
    except ApiError:
        pass   # the agent went away meanwhile: the exit code still reaches the caller
    return code


def _report_exit(host: str | None, cid: str, code: int) -> None:
    """The agent learns of the exit through a pidfd but only we (the parent) know the code."""
    for _ in range(50):
        c = _client(host).post(f"/containers/{cid}/exited", {"code": code})
        if c["State"]["Status"] == "exited":
            return
        time.sleep(0.01)


def exec_cmd(host: str | None, container: str, cmd: list[str], interactive: bool,
             tty: bool) -> int:
    from ..api.client import ref
    from ..runtime import process
    c = call(host, "get", f"/containers/{ref(container)}")
    if not c["State"]["Running"]:
        raise Fail(f"container {c['Name']} is not running")
    try:
        return process.exec_in(c["State"]["Pid"], list(cmd), tty=tty, interactive=interactive)
    except FileNotFoundError:
        raise Fail(f"executable not found in the container: {cmd[0]}") from None
    except (OSError, ValueError) as e:
        raise Fail(f"exec in {c['Name']} failed: {e}") from None


def ps_text(cs: list[dict], quiet: bool, now: float) -> tuple[str, bool]:
    """`overnet ps` output and whether a newline follows it."""
    from .format import ago, table
    if quiet:
        return "".join(c["Id"][:12] + "\n" for c in cs), False
    rows = []
    for c in cs:
        st = c["State"]
        if st["Status"] == "running":
            status = f"Up {ago(now - st['StartedAt'])}"
        elif st["Status"] == "exited":
            code = "" if st["ExitCode"] is None else f" ({st['ExitCode']})"
            status = f"Exited{code} {ago(now - st['FinishedAt'])} ago"
        else:
            status = "Created"
        command = " ".join(c["Config"]["Cmd"])
        command = '"' + (command if len(command) <= 20 else command[:19] + "…") + '"'
        nets = ",".join(c["NetworkSettings"]["Networks"])
        rows.append([c["Id"][:12], command, f"{ago(now - c['Created'])} ago", status,
                     c["NetworkSettings"]["IPAddress"], nets, c["Name"]])
    return table(["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "IP", "NETWORK", "NAMES"],
                 rows), True


# --- dispatch ----------------------------------------------------------------------------------

def _echo(text: str, nl: bool = True) -> None:
    out = text + ("\n" if nl else "")
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()


def run_request(argv: list[str]) -> dict:
    """`run`'s arguments -> the POST /containers body (Fallback, Fail)."""
    o, cmd = parse(argv, RUN)
    return run_body(o.get("detach", False), o.get("interactive", False), o.get("tty", False),
                    o.get("auto_remove", False), o.get("name"), o.get("net"),
                    o.get("publish_service"), o.get("links", []), o.get("env", []), cmd,
                    o.get("privileged", False))


def ps_options(argv: list[str]) -> tuple[bool, bool]:
    """`ps`'s arguments -> (--all, --quiet) (Fallback)."""
    o, rest = parse(argv, PS)
    if rest:
        raise Fallback
    return o.get("show_all", False), o.get("quiet", False)


def _run(host: str | None, argv: list[str]) -> int:
    body = run_request(argv)
    c = call(host, "post", "/containers", body)
    if body["detach"]:
        _echo(c["Id"])
        return 0
    return foreground(host, c, body["interactive"])


def _exec(host: str | None, argv: list[str]) -> int:
    o, rest = parse(argv, EXEC)
    if len(rest) < 2:
        raise Fallback       # click says which argument is missing
    return exec_cmd(host, rest[0], rest[1:], o.get("interactive", False), o.get("tty", False))


def _ps(host: str | None, argv: list[str]) -> int:
    show_all, quiet = ps_options(argv)
    cs = call(host, "get", "/containers", all="1" if show_all else "")
    _echo(*ps_text(cs, quiet, time.time()))
    return 0


def dispatch(argv: list[str]) -> int:
    """Run a hot command; Fallback when click must handle this command line."""
    opts, rest = parse(argv, GLOBAL)
    if not rest or rest[0] not in HOT or "--" in argv[:len(argv) - len(rest)]:
        raise Fallback
    handler = {"run": _run, "exec": _exec, "ps": _ps}[rest[0]]
    return handler(opts.get("host"), rest[1:])


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] and argv[0] in ROOT_ONLY and os.geteuid() != 0:
        sys.stderr.write(f"Error: overnet {argv[0]} needs root (namespaces and netlink)\n")
        sys.exit(1)
    try:
        code = dispatch(argv)
    except Fallback:
        if sys.flags.no_site:     # started by the lean launcher: click lives in site-packages
            import site
            site.main()
        from .main import main as click_main
        click_main()
        return
    except Fail as e:
        sys.stdout.flush()
        sys.stderr.write(f"Error: {e}\n")
        code = 1
    except KeyboardInterrupt:     # what click prints on Ctrl-C
        sys.stderr.write("\nAborted!\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
