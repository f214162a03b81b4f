//! Running one tool: a fresh store with its memory limit and deadline, the
//! call, and the translation of whatever happened into a [`ToolError`].

use std::time::Duration;

use wasmtime::{Store, Trap};

use super::engine::arm_deadline;
use super::host::{GuestFailure, PluginState};
use super::{PluginRuntime, ToolError};
use crate::capabilities::Capabilities;

impl PluginRuntime {
    /// Runs `tool` with JSON arguments on behalf of the session `caps`
    /// belongs to.
    #[tracing::instrument(skip(self, caps, args_json), fields(plugin))]
    pub async fn invoke(
        &self,
        caps: Capabilities,
        tool: &str,
        args_json: &str,
    ) -> Result<String, ToolError> {
        let (plugin, spec) = {
            let registry = self.registry.read().unwrap();
            registry.tools.get(tool).cloned()
        }
        .ok_or_else(|| ToolError::UnknownTool(tool.to_string()))?;
        tracing::Span::current().record("plugin", plugin.name.as_str());
        let tc = self.config_of(tool);
        if !tc.enabled {
            return Err(ToolError::Disabled(tool.to_string()));
        }
        let timeout_ms = tc.timeout_ms.unwrap_or(self.defaults.timeout_ms);
        let memory_mb = tc.memory_mb.unwrap_or(self.defaults.memory_mb);
        let config_json = serde_json::to_string(&tc.config).unwrap_or_else(|_| "{}".into());
        let timeout = Duration::from_millis(timeout_ms);

        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut store = Store::new(
            &self.engine,
            PluginState::new(
                &plugin.name,
                Some((caps, self.grant(&spec))),
                (memory_mb as usize) << 20,
            ),
        );
        store.limiter(|s| &mut s.limiter);
        arm_deadline(&mut store, timeout);
        let call = plugin
            .bindings
            .invoke(&mut store, tool, args_json, &config_json);
        let outcome = tokio::time::timeout(timeout, call).await;
        let stderr = log_guest_output(&plugin.name, store.data());
        let result = match outcome {
            Err(_) => Err(ToolError::Timeout {
                tool: tool.into(),
                ms: timeout_ms,
            }),
            Ok(Ok(Ok(text))) => Ok(text),
            Ok(Ok(Err(e))) => Err(match e {
                GuestFailure::InvalidArguments(m) => ToolError::InvalidArguments(m),
                GuestFailure::UnknownTool(m) => ToolError::UnknownTool(m),
                GuestFailure::Failed(m) => ToolError::Failed(m),
                GuestFailure::Host { code, message } => ToolError::Host {
                    kind: code.name(),
                    message,
                },
            }),
            Ok(Err(e)) if store.data().limiter.hit_limit => {
                tracing::debug!(error = %format!("{e:#}"), "trap after the memory limit was hit");
                Err(ToolError::OutOfMemory {
                    tool: tool.into(),
                    mb: memory_mb,
                })
            }
            Ok(Err(e)) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Err(ToolError::Timeout {
                    tool: tool.into(),
                    ms: timeout_ms,
                })
            }
            Ok(Err(e)) => {
                tracing::debug!(error = ?e, "plugin trapped");
                let message =
                    panic_message(&stderr).unwrap_or_else(|| match e.downcast_ref::<Trap>() {
                        Some(trap) => trap.to_string(),
                        None => e.to_string(),
                    });
                Err(ToolError::Trap {
                    tool: tool.into(),
                    message,
                })
            }
        };
        if let Err(e) = &result {
            tracing::debug!(code = e.code(), error = %e, "tool failed");
        }
        result
    }
}

/// Sends what the guest wrote to stdout and stderr to the log, under the
/// plugin's name. Returns stderr.
fn log_guest_output(plugin: &str, state: &PluginState) -> String {
    let stdout = String::from_utf8_lossy(&state.stdout.contents()).into_owned();
    let stderr = String::from_utf8_lossy(&state.stderr.contents()).into_owned();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(plugin, stream = "stdout", "{line}");
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        tracing::warn!(plugin, stream = "stderr", "{line}");
    }
    stderr
}

/// A Rust panic prints `thread '...' panicked at FILE:LINE:COL:` and then its
/// message to stderr before trapping; this is the short form of both.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    let head = lines.find(|l| l.contains("panicked at"))?;
    let location = head
        .split("panicked at")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .trim_end_matches(':');
    let message = lines.next().unwrap_or_default().trim();
    Some(format!("panicked at {location}: {message}"))
}
