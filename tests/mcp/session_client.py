"""An MCP client of a Crogia session, written with the official `mcp` package.

    session_client.py http URL TOKEN MODE
    session_client.py stdio CROGIA_BINARY URL TOKEN SESSION_ID MODE

`http` speaks streamable HTTP to URL (`/mcp/{session_id}`), with the bearer
TOKEN ("-" for none); `stdio` launches `crogia mcp SESSION_ID` and speaks to
it over its stdin and stdout. MODE is the SDK's connection mode: "auto" (the
newest protocol revision, found by `server/discover`) or "legacy" (the
`initialize` handshake of the revisions before 2026-07-28).

It lists the tools, writes a file with `write_file`, reads it back with
`read_file`, reads a missing file, and calls a tool that does not exist; it
prints one JSON object with what it saw, for the test to check.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def text(result):
    return "".join(block.text for block in result.content if block.type == "text")


async def main(argv):
    transport = argv[0]
    if transport == "http":
        url, token, mode = argv[1:4]
        headers = {} if token == "-" else {"Authorization": f"Bearer {token}"}
        server = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers))
    else:
        binary, url, token, session, mode = argv[1:6]
        env = {"CROGIA_URL": url}
        if token != "-":
            env["CROGIA_TOKEN"] = token
        server = StdioServerParameters(command=binary, args=["mcp", session], env=env)
    out = {}
    async with Client(server, mode=mode) as client:
        out["protocol"] = client.protocol_version
        out["server"] = client.server_info.name if client.server_info else None
        tools = await client.list_tools()
        out["tools"] = {
            t.name: {
                "schema": t.input_schema,
                "read_only": bool(t.annotations and t.annotations.read_only_hint),
            }
            for t in tools.tools
        }
        wrote = await client.call_tool(
            "write_file", {"path": "from-mcp.txt", "content": f"written over {transport}\n"}
        )
        out["write"] = {"text": text(wrote), "is_error": bool(wrote.is_error)}
        read = await client.call_tool("read_file", {"path": "from-mcp.txt"})
        out["read"] = {"text": text(read), "is_error": bool(read.is_error)}
        missing = await client.call_tool("read_file", {"path": "no-such-file.txt"})
        out["missing"] = {"text": text(missing), "is_error": bool(missing.is_error)}
        try:
            await client.call_tool("no_such_tool", {})
            out["unknown"] = {"raised": False}
        except MCPError as e:
            out["unknown"] = {"raised": True, "code": e.error.code, "message": e.error.message}
    print(json.dumps(out))


asyncio.run(main(sys.argv[1:]))
