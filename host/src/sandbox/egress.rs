//! The server's side of a container's egress proxy: the connections its
//! programs ask for, and the two ways to answer one (carry it, or refuse it
//! with a message the program reads).

use bytes::Bytes;
use crogia_sandbox_agent::protocol::{self, EgressAsk, EgressRefusal};
use http_body_util::channel::Sender;
use hyper::StatusCode;

use super::Sandbox;
use super::agent::{AgentError, ndjson, refusal, refused};

/// A connection the server dialled, as the program's side sees it: what
/// is sent on `to_program` reaches the program; `from_program` is what the
/// program sends. Dropping both ends it.
pub struct EgressConnection {
    pub to_program: Sender<Bytes>,
    pub from_program: hyper::body::Incoming,
}

impl Sandbox {
    /// The connections programs in `container` ask for, as they ask, until
    /// the agent or the link goes away.
    pub async fn follow_egress(
        &self,
        container: &str,
    ) -> Result<impl futures_util::Stream<Item = EgressAsk> + Send + 'static, AgentError> {
        let answer = self
            .agent_stream(container, protocol::EGRESS, &serde_json::json!({}))
            .await?;
        Ok(ndjson::<EgressAsk>(answer, container))
    }

    /// Tells the program waiting for connection `refusal.id` that it is
    /// not made, and why. `NotFound` when it no longer waits.
    pub async fn refuse_egress(
        &self,
        container: &str,
        refusal: &EgressRefusal,
    ) -> Result<(), AgentError> {
        let _: serde_json::Value = self
            .agent_call(container, protocol::EGRESS_REFUSE, refusal)
            .await?;
        Ok(())
    }

    /// Hands connection `id` to the program waiting for it. `NotFound` when
    /// it no longer waits (it gave up, or went away).
    pub async fn open_egress(
        &self,
        container: &str,
        id: u64,
    ) -> Result<EgressConnection, AgentError> {
        let path = format!("{}?id={id}", protocol::EGRESS_OPEN);
        let (to_program, answer) = self.agent_duplex(container, &path).await?;
        match answer.status() {
            StatusCode::OK => Ok(EgressConnection {
                to_program,
                from_program: answer.into_body(),
            }),
            status => Err(refused(status, refusal(answer).await).into()),
        }
    }
}
