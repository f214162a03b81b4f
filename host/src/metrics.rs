//! Prometheus metrics, served at `/metrics` (OpenMetrics text): sessions by
//! status, tasks by outcome, tool calls by tool and outcome with latency
//! histograms, model tokens (in all and by principal), WebSocket clients, and Docker call latencies.
//!
//! One [`Metrics`] per server (its own registry, no global state), shared by
//! the layers that record into it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabel {
    pub tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrincipalKindLabels {
    pub principal: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhenLabel {
    pub when: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: String,
}

/// The `tool` label of calls to tools no plugin provides (names a model
/// made up): one series for all of them.
pub const UNKNOWN_TOOL: &str = "unknown";

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 1 ms to about 2 minutes.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    pub sessions: Family<StatusLabel, Gauge>,
    pub tasks: Family<OutcomeLabel, Counter>,
    pub tool_calls: Family<ToolLabels, Counter>,
    pub tool_seconds: Histograms<ToolLabel>,
    pub model_tokens: Family<KindLabel, Counter>,
    pub principal_tokens: Family<PrincipalKindLabels, Counter>,
    pub websocket_clients: Gauge,
    pub docker_seconds: Histograms<OperationLabel>,
    pub network_connections: Family<DecisionLabel, Counter>,
    pub network_bytes: Family<DirectionLabel, Counter>,
    pub fork_layers: Family<WhenLabel, Counter>,
    pub fork_layers_ahead_pending: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("crogia");
        let sessions = Family::<StatusLabel, Gauge>::default();
        registry.register("sessions", "Sessions by status", sessions.clone());
        let tasks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tasks",
            "Tasks finished here, by outcome (`lost`: stopped here because another server took the session over)",
            tasks.clone(),
        );
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls, by tool and outcome (ok or the error code)",
            tool_calls.clone(),
        );
        let tool_seconds: Histograms<ToolLabel> = Family::new_with_constructor(latency);
        registry.register(
            "tool_call_seconds",
            "Tool call latency",
            tool_seconds.clone(),
        );
        let model_tokens = Family::<KindLabel, Counter>::default();
        registry.register(
            "model_tokens",
            "Model tokens used, by kind (prompt, completion)",
            model_tokens.clone(),
        );
        let principal_tokens = Family::<PrincipalKindLabels, Counter>::default();
        registry.register(
            "principal_tokens",
            "Model tokens used, by principal (the session's owner) and kind",
            principal_tokens.clone(),
        );
        let websocket_clients = Gauge::default();
        registry.register(
            "websocket_clients",
            "Connected WebSocket clients",
            websocket_clients.clone(),
        );
        let docker_seconds: Histograms<OperationLabel> = Family::new_with_constructor(latency);
        registry.register(
            "docker_call_seconds",
            "Docker engine call latency, by operation",
            docker_seconds.clone(),
        );
        let network_connections = Family::<DecisionLabel, Counter>::default();
        registry.register(
            "network_connections",
            "Connections sandboxes asked for, by decision (allowed, denied)",
            network_connections.clone(),
        );
        let network_bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "network_bytes",
            "Bytes carried for sandboxes, by direction (up: sent by the sandbox, down: received)",
            network_bytes.clone(),
        );
        let fork_layers = Family::<WhenLabel, Counter>::default();
        registry.register(
            "fork_layers_built",
            "Fork layers written, by when (fork: by a checkpoint's first fork; ahead: right after the checkpoint, workspace.fork_layers_ahead)",
            fork_layers.clone(),
        );
        let fork_layers_ahead_pending = Gauge::default();
        registry.register(
            "fork_layers_ahead_pending",
            "Fork layers to be written ahead: asked for by a checkpoint, not yet written nor given up",
            fork_layers_ahead_pending.clone(),
        );
        Self {
            registry,
            sessions,
            tasks,
            tool_calls,
            tool_seconds,
            model_tokens,
            principal_tokens,
            websocket_clients,
            docker_seconds,
            network_connections,
            network_bytes,
            fork_layers,
            fork_layers_ahead_pending,
        }
    }

    /// Counts a fork layer written, by the fork that needed it or `ahead`.
    pub fn fork_layer_built(&self, ahead: bool) {
        let when = if ahead { "ahead" } else { "fork" };
        self.fork_layers
            .get_or_create(&WhenLabel { when: when.into() })
            .inc();
    }

    /// Counts one connection a sandbox asked for, and what it carried.
    pub fn network_connection(&self, decision: &str, bytes_up: u64, bytes_down: u64) {
        self.network_connections
            .get_or_create(&DecisionLabel {
                decision: decision.into(),
            })
            .inc();
        for (direction, n) in [("up", bytes_up), ("down", bytes_down)] {
            self.network_bytes
                .get_or_create(&DirectionLabel {
                    direction: direction.into(),
                })
                .inc_by(n);
        }
    }

    pub fn task_finished(&self, outcome: &str) {
        self.tasks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn tool_called(&self, tool: &str, outcome: &str, took: Duration) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.tool_seconds
            .get_or_create(&ToolLabel { tool: tool.into() })
            .observe(took.as_secs_f64());
    }

    pub fn tokens(&self, principal: &str, prompt: u64, completion: u64) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            self.principal_tokens
                .get_or_create(&PrincipalKindLabels {
                    principal: principal.into(),
                    kind: kind.into(),
                })
                .inc_by(n);
        }
        self.model_tokens
            .get_or_create(&KindLabel {
                kind: "prompt".into(),
            })
            .inc_by(prompt);
        self.model_tokens
            .get_or_create(&KindLabel {
                kind: "completion".into(),
            })
            .inc_by(completion);
    }

    pub fn docker_call(&self, operation: &str, took: Duration) {
        self.docker_seconds
            .get_or_create(&OperationLabel {
                operation: operation.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Sets the session gauges to `counts` (status → number), zeroing the
    /// statuses not listed.
    pub fn set_sessions(&self, counts: &[(&str, i64)]) {
        for status in ["active", "stopped", "error"] {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.sessions
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .set(n);
        }
    }

    /// The OpenMetrics text of everything recorded.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Counts a WebSocket client while it lives.
pub struct ClientGuard(Gauge);

impl ClientGuard {
    pub fn new(metrics: &Metrics) -> Self {
        metrics.websocket_clients.inc();
        Self(metrics.websocket_clients.clone())
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.task_finished("completed");
        m.tool_called("shell", "ok", Duration::from_millis(12));
        m.tokens("alice", 10, 5);
        m.set_sessions(&[("active", 3)]);
        {
            let _c = ClientGuard::new(&m);
            assert!(m.render().contains("crogia_websocket_clients 1"));
        }
        let text = m.render();
        assert!(
            text.contains("crogia_tasks_total{outcome=\"completed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "crogia_principal_tokens_total{principal=\"alice\",kind=\"completion\"} 5"
            ),
            "{text}"
        );
        assert!(
            text.contains("crogia_tool_calls_total{tool=\"shell\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("crogia_tool_call_seconds_count{tool=\"shell\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("crogia_model_tokens_total{kind=\"prompt\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("crogia_sessions{status=\"active\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("crogia_sessions{status=\"error\"} 0"),
            "{text}"
        );
        assert!(text.contains("crogia_websocket_clients 0"), "{text}");
    }
}
