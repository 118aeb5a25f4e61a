"""A tiny stand-in for the agent's /endpoints API on a temporary unix socket: the protocol the
plugin speaks, with no kernel and no store behind it (unit tests of the plugin's logic)."""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit


class FakeAgent:
    def __init__(self, networks: tuple[str, ...] = ("foobar",)) -> None:
        self.dir = tempfile.mkdtemp(prefix="ovcni-")
        self.socket = os.path.join(self.dir, "agent.sock")
        self.networks = set(networks)
        self.endpoints: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.fail_with: int | None = None   # answer every request with this status
        self.check_problems: list[str] = []
        self.next_ip = 2
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, answer = agent.handle(self.command, self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(self.socket, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def endpoint(self, body: dict) -> dict:
        ip = f"10.0.0.{self.next_ip}"
        self.next_ip += 1
        return {"id": f"ep{self.next_ip}", "network": "net-id-" + body["network"],
                "network_name": body["network"], "driver": "overlay",
                "container_id": body["container_id"], "ifname": body["ifname"],
                "host_ifname": f"veth{body['container_id'][:7]}", "sandbox": body["netns"],
                "ip": body.get("ip", ip), "prefixlen": 24, "mac": "02:42:0a:00:00:02",
                "gateway": "10.0.0.1", "mtu": 1450,
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
                "dns": {"nameservers": ["10.0.0.1"], "search": [f"{body['network']}.overnet"],
                        "domain": "overnet"},
                "runtime": body["runtime"], "host": "net-1", "name": body.get("name")}

    def handle(self, method: str, target: str, body: dict | None) -> tuple[int, dict]:
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        self.requests.append((method, url.path, body))
        if self.fail_with:
            return self.fail_with, {"message": "store unavailable"}
        if parts[0] == "networks" and method == "GET":
            known = parts[1] in self.networks
            return (200, {"name": parts[1]}) if known else (404, {"message": "no such network"})
        if parts[0] != "endpoints":
            return 404, {"message": "no such route"}
        if parts[1:] == ["gc"] and method == "POST":
            return self.gc(body or {})
        if len(parts) == 1 and method == "POST":
            return self.attach(body or {})
        if len(parts) == 1 and method == "GET":
            runtime = parse_qs(url.query).get("runtime", [None])[0]
            return 200, [e for e in self.endpoints.values() if runtime in (None, e["runtime"])]
        key = (parts[1], parts[2])
        if method == "DELETE":
            return 200, {"removed": self.endpoints.pop(key, None) is not None}
        if key not in self.endpoints:
            return 404, {"message": f"no endpoint {key}"}
        if parts[3:] == ["check"]:
            return 200, {"ok": not self.check_problems, "problems": self.check_problems}
        return 200, self.endpoints[key]

    def attach(self, body: dict) -> tuple[int, dict]:
        if body["network"] not in self.networks:
            return 404, {"message": f"network {body['network']} not found"}
        key = (body["container_id"], body["ifname"])
        if key in self.endpoints:
            return 409, {"message": f"container {key[0]} is already attached as {key[1]}"}
        if body.get("name") and not body["name"].replace("-", "").isalnum():
            return 400, {"message": f"invalid name {body['name']!r}"}
        self.endpoints[key] = self.endpoint(body)
        return 201, self.endpoints[key]

    def gc(self, body: dict) -> tuple[int, dict]:
        keep = {(k["container_id"], k["ifname"]) for k in body.get("keep", [])}
        gone = [k for k, e in self.endpoints.items()
                if e["runtime"] == body.get("runtime") and k not in keep]
        for k in gone:
            del self.endpoints[k]
        return 200, {"removed": [{"container_id": c, "ifname": i} for c, i in gone]}
