#!/usr/bin/env bash
# Scaffolds a plugin crate: plugins/new-plugin.sh my_tool
# Creates plugins/my-tool/ with one working tool and adds it to the workspace.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NAME="${1:-}"
# The tool-name rule of crogia-plugin-contract (valid_tool_name).
if ! [[ "$NAME" =~ ^[a-z][a-z0-9_]{0,63}$ ]] || [ "$NAME" = network ]; then
  echo "usage: just new-plugin NAME   (NAME: 1 to 64 characters of a-z, 0-9 and _, starting with a letter, e.g. count_lines)" >&2
  exit 1
fi
CRATE="${NAME//_/-}"
DIR="$HERE/$CRATE"
[ -e "$DIR" ] && { echo "new-plugin: $DIR already exists" >&2; exit 1; }
ARGS="$(echo "$NAME" | sed -E 's/(^|_)([a-z])/\U\2/g')Args"

mkdir -p "$DIR/src"
cat > "$DIR/Cargo.toml" <<TOML
[package]
name = "$CRATE"
version.workspace = true
edition.workspace = true
license.workspace = true

[lib]
crate-type = ["cdylib"]

[dependencies]
crogia-plugin-sdk.workspace = true
schemars.workspace = true
serde.workspace = true
TOML
cat > "$DIR/src/lib.rs" <<RUST
//! \`$NAME\`: describe what this plugin provides.

use crogia_plugin_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct $ARGS {
    /// A file in the workspace, e.g. "src/app.py".
    path: String,
}

/// Describe the tool for the model: what it does, what it returns, and when
/// to use it. This doc comment is the description the model reads.
// The host capabilities it uses (files-read, files-write, exec, processes);
// any other host call fails with `denied`. `subject`: what a person approves.
#[tool(capabilities = ["files-read"], subject = "path")]
fn $NAME(args: $ARGS) -> ToolResult {
    let text = fs::read_to_string(&args.path)?;
    Ok(format!("{} has {} lines", args.path, text.lines().count()))
}

export_tools!($NAME);
RUST

# Add the crate to the workspace members.
python3 - "$HERE/Cargo.toml" "$CRATE" <<'PY'
import re, sys
path, crate = sys.argv[1], sys.argv[2]
text = open(path).read()
m = re.search(r'members = \[(.*?)\]', text, re.S)
members = [x.strip().strip('"') for x in m.group(1).split(',') if x.strip()]
members.append(crate)
members = sorted(set(members), key=lambda x: (x.startswith('testing/'), x))
new = 'members = [\n' + ''.join(f'    "{x}",\n' for x in members) + ']'
open(path, 'w').write(text[:m.start()] + new + text[m.end():])
PY
echo "new-plugin: created plugins/$CRATE (tool $NAME). Build it with: just build-plugins"
echo "new-plugin: the server loads plugins/dist/$CRATE.wasm (and picks up changes while it runs)."
