"""A remote MCP server for the tests, written with the official `mcp` package.

    remote_server.py PORT API_KEY

Serves streamable HTTP at http://127.0.0.1:PORT/mcp and answers only
requests that carry `X-Api-Key: API_KEY` (401 otherwise), so a test shows
that header values reach it from the environment. Its tools:

- `echo(text)`: "echo: <text>";
- `crash()`: ends this process at once, as a server that dies would;
- `bad.name()`: a name no model can call (so it must be left out).

It prints "ready" once it listens.
"""

import os
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.responses import PlainTextResponse

port, api_key = int(sys.argv[1]), sys.argv[2]
server = MCPServer("remote")


@server.tool()
def echo(text: str) -> str:
    """Says the text back."""
    return f"echo: {text}"


@server.tool()
def crash() -> str:
    """Ends the server."""
    os._exit(3)


@server.tool(name="bad.name")
def bad_name() -> str:
    """A tool with a name a model cannot call."""
    return "never"


app = server.streamable_http_app()


async def guarded(scope, receive, send):
    if scope["type"] == "http":
        headers = dict(scope["headers"])
        if headers.get(b"x-api-key", b"").decode() != api_key:
            await PlainTextResponse("missing or wrong X-Api-Key", status_code=401)(scope, receive, send)
            return
    await app(scope, receive, send)


async def main():
    config = uvicorn.Config(guarded, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    s = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(s.serve)
        while not s.started:
            await anyio.sleep(0.05)
        print("ready", flush=True)


anyio.run(main)
