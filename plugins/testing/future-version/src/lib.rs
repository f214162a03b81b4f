//! A plugin built against a future contract version, crogia:plugin@0.3.0
//! (tests that the host refuses it by name and version).

wit_bindgen::generate!({
    inline: "
        package crogia:plugin@0.3.0;
        interface tool {
            record tool-spec { name: string, description: string, parameters-schema: string }
            variant tool-error { invalid-arguments(string), unknown-tool(string), failed(string) }
            tools: func() -> list<tool-spec>;
            invoke: func(name: string, args-json: string, config-json: string) -> result<string, tool-error>;
        }
        world plugin { export tool; }
    ",
    world: "plugin",
});

use exports::crogia::plugin::tool::{Guest, ToolError, ToolSpec};

struct Impl;

impl Guest for Impl {
    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "future_tool".into(),
            description: "From the future.".into(),
            parameters_schema: "{}".into(),
        }]
    }
    fn invoke(_name: String, _args: String, _config: String) -> Result<String, ToolError> {
        Ok("future".into())
    }
}

export!(Impl);
