//! The workspace inside a container, through its agent: files, listings
//! and searches, each one request on the container's agent link. The
//! agent confines every path to `/workspace` and refuses special files;
//! its refusals come back as [`AgentError::Refused`].

use bytes::Bytes;
use crogia_sandbox_agent::fs::{EntryInfo, Metadata};
use crogia_sandbox_agent::protocol::{
    self, PathRequest, ReadRequest, SearchRequest, TailRequest, WriteQuery,
};
use crogia_sandbox_agent::search::GrepMatch;

use super::Sandbox;
use super::agent::AgentError;

impl Sandbox {
    /// A whole file, refused when over `limit` bytes.
    pub async fn read_file(
        &self,
        container: &str,
        path: &str,
        limit: u64,
    ) -> Result<Vec<u8>, AgentError> {
        let _timing = self.timing("read_file");
        let ask = ReadRequest {
            path: path.into(),
            limit,
        };
        let json = serde_json::to_vec(&ask).expect("requests serialise");
        let bytes = self
            .agent_send(
                container,
                protocol::FS_READ,
                "application/json",
                json.into(),
            )
            .await?;
        Ok(bytes.into())
    }

    /// Writes a file atomically, making missing parent directories.
    pub async fn write_file(
        &self,
        container: &str,
        path: &str,
        data: impl Into<Bytes>,
    ) -> Result<(), AgentError> {
        let _timing = self.timing("write_file");
        let query =
            serde_urlencoded::to_string(WriteQuery { path: path.into() }).expect("a path encodes");
        let target = format!("{}?{query}", protocol::FS_WRITE);
        self.agent_send(container, &target, "application/octet-stream", data.into())
            .await?;
        Ok(())
    }

    pub async fn list_dir(
        &self,
        container: &str,
        path: &str,
    ) -> Result<Vec<EntryInfo>, AgentError> {
        self.agent_call(
            container,
            protocol::FS_LIST,
            &PathRequest { path: path.into() },
        )
        .await
    }

    pub async fn stat(&self, container: &str, path: &str) -> Result<Metadata, AgentError> {
        self.agent_call(
            container,
            protocol::FS_STAT,
            &PathRequest { path: path.into() },
        )
        .await
    }

    /// Removes a file, or a directory and everything in it.
    pub async fn remove_path(&self, container: &str, path: &str) -> Result<(), AgentError> {
        self.agent_call(
            container,
            protocol::FS_REMOVE,
            &PathRequest { path: path.into() },
        )
        .await
    }

    /// The last `lines` lines of a file.
    pub async fn tail(
        &self,
        container: &str,
        path: &str,
        lines: usize,
    ) -> Result<String, AgentError> {
        let ask = TailRequest {
            path: path.into(),
            lines,
        };
        self.agent_call(container, protocol::FS_TAIL, &ask).await
    }

    /// Paths of the files matching a glob.
    pub async fn glob(
        &self,
        container: &str,
        ask: &SearchRequest,
    ) -> Result<Vec<String>, AgentError> {
        let _timing = self.timing("glob");
        self.agent_call(container, protocol::GLOB, ask).await
    }

    /// Lines matching a regular expression.
    pub async fn grep(
        &self,
        container: &str,
        ask: &SearchRequest,
    ) -> Result<Vec<GrepMatch>, AgentError> {
        let _timing = self.timing("grep");
        self.agent_call(container, protocol::GREP, ask).await
    }
}
