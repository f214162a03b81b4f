"""A small MCP stdio server, standard library only (the sandbox image has
python3 but not the mcp package): newline-delimited JSON-RPC on stdin and
stdout, the `initialize` handshake, tools/list and tools/call.

The tests write it into a session's workspace and configure it as
`[mcp.servers.local] command = ["python3", "stdio_server.py"]`, so it runs
inside the session's container. Its tools:

- `where`: what only a program inside the container can see (the marker
  file the test wrote into the workspace, its working directory, its pid,
  the GREETING variable from its configured environment);
- `fetch`: an HTTP GET through the container's egress proxy (even for a
  loopback address), answering the status and body;
- `sleep`: answers after `seconds`;
- `crash`: writes a line on stderr and exits with code 3.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

TOOLS = [
    {
        "name": "where",
        "description": "Where this server runs.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "fetch",
        "description": "GET a URL through the sandbox's proxy.",
        "inputSchema": {
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
        },
    },
    {
        "name": "sleep",
        "description": "Wait, then answer.",
        "inputSchema": {
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
        },
    },
    {
        "name": "crash",
        "description": "Exit at once.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]


def where():
    try:
        with open("marker.txt") as f:
            marker = f.read()
    except OSError as e:
        marker = f"no marker: {e}"
    return json.dumps(
        {
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "marker": marker,
            "greeting": os.environ.get("GREETING"),
        }
    )


def fetch(url):
    proxy = os.environ.get("HTTP_PROXY", "")
    # Loopback too goes through the proxy (as curl's --noproxy '' does).
    for name in ("NO_PROXY", "no_proxy"):
        os.environ.pop(name, None)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        with opener.open(url, timeout=30) as answer:
            return f"{answer.status} {answer.read().decode(errors='replace')}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read().decode(errors='replace')[:300]}"
    except Exception as e:  # noqa: BLE001 - the model sees what went wrong
        return f"error {e}"


def call(name, arguments):
    if name == "where":
        return where()
    if name == "fetch":
        return fetch(arguments.get("url", ""))
    if name == "sleep":
        time.sleep(float(arguments.get("seconds", 1)))
        return "awake"
    if name == "crash":
        sys.stderr.write("crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    raise KeyError(name)


def answer(request):
    method = request.get("method")
    params = request.get("params") or {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "crogia-test-stdio", "version": "1.0"},
        }
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        text = call(params["name"], params.get("arguments") or {})
        return {"content": [{"type": "text", "text": text}], "isError": False}
    raise LookupError(method)


def main():
    sys.stderr.write("stdio server started\n")
    sys.stderr.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:
            continue  # a notification
        reply = {"jsonrpc": "2.0", "id": request["id"]}
        try:
            reply["result"] = answer(request)
        except LookupError as e:
            reply["error"] = {"code": -32601, "message": f"unknown: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


main()
