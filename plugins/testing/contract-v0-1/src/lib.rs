//! A plugin built against contract 0.1 (`crogia:plugin@0.1.0`), the way
//! every plugin was built before 0.2: raw bindings from the 0.1 WIT file,
//! no capability declaration. Tests that a server keeps loading and running
//! it, with every host interface it uses.

wit_bindgen::generate!({
    path: "../../../plugin-sdk/wit/v0.1.0",
    world: "plugin",
});

use crogia::plugin::{exec, files, processes};
use exports::crogia::plugin::tool::{Guest, ToolError, ToolSpec};

struct Impl;

fn failed(e: crogia::plugin::types::HostError) -> ToolError {
    ToolError::Failed(format!("{:?}: {}", e.code, e.message))
}

impl Guest for Impl {
    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "legacy_probe".into(),
            description: "Writes a file, reads it back, runs a command and lists processes through contract 0.1.".into(),
            parameters_schema: r#"{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}"#.into(),
        }]
    }

    fn invoke(name: String, args: String, _config: String) -> Result<String, ToolError> {
        if name != "legacy_probe" {
            return Err(ToolError::UnknownTool(name));
        }
        let command = args
            .split("\"command\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| ToolError::InvalidArguments("expected {\"command\": \"...\"}".into()))?
            .to_string();
        files::write("legacy.txt", b"written by 0.1").map_err(failed)?;
        let back = files::read("legacy.txt").map_err(failed)?;
        let out = exec::run(&command, None).map_err(failed)?;
        let procs = processes::list().map_err(failed)?;
        Ok(format!(
            "read back: {}\nexit: {:?}\nstdout: {}processes: {}",
            String::from_utf8_lossy(&back),
            out.exit_code,
            out.stdout,
            procs.len()
        ))
    }
}

export!(Impl);
