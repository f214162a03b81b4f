//! Each sandbox's network, decided and carried by the server.
//!
//! A container has no network interface but `lo`. Programs in it reach out
//! through the sandbox agent's HTTP proxy (plain HTTP and `CONNECT`), which
//! asks the server for every connection. The server decides it by the
//! session's [`Policy`] — first the name asked for, then every address it
//! resolves to, so a name that resolves to a private address is refused too
//! — dials it itself, and carries the bytes over the agent's link, counting
//! them against the session's limits. Every attempt is logged as a
//! coalesced `network_request` event.
//!
//! - `policy.rs`: host patterns and verdicts;
//! - `log.rs`: coalescing attempts into events;
//! - this file: one session's network state, and carrying one connection.

mod log;
mod policy;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crogia_sandbox_agent::protocol::{EgressAsk, EgressRefusal};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub use log::{Attempt, NetworkLog};
pub use policy::{
    Denial, Host, MAX_PATTERN_CHARS, MAX_SESSION_PATTERNS, Pattern, Policy, PolicyError,
    SessionNetwork, is_special, parse_patterns, pattern_regex,
};

use crate::config::NetworkConfig;
use crate::events::NetworkDecision;
use crate::sandbox::{AgentError, Sandbox, SandboxError};

/// Bytes read from a remote host at a time.
const READ_CHUNK: usize = 16 * 1024;

/// One session's network: its settings and policy, what it uses now, and
/// the attempts not yet published.
#[derive(Debug)]
pub struct SessionEgress {
    config: Arc<NetworkConfig>,
    settings: RwLock<(SessionNetwork, Arc<Policy>)>,
    open: AtomicUsize,
    bytes: AtomicU64,
    log: Mutex<NetworkLog>,
    /// Woken when an attempt is logged.
    logged: tokio::sync::Notify,
}

/// Why a connection is not made, and what the program is told.
#[derive(Debug)]
enum Refusal {
    /// The policy: 403, decision `denied`.
    Policy(String),
    /// A limit: 429, decision `denied`.
    Limit(String),
    /// Allowed, but the remote host could not be reached: 502.
    Unreachable(String),
}

impl SessionEgress {
    /// A session's network with `own` settings; an error (for the client)
    /// when they are malformed or reach past what the operator allows.
    pub fn new(config: Arc<NetworkConfig>, own: SessionNetwork) -> Result<Self, PolicyError> {
        let policy = Policy::new(&config, &own)?;
        Ok(Self {
            config,
            settings: RwLock::new((own, Arc::new(policy))),
            open: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            log: Mutex::default(),
            logged: tokio::sync::Notify::new(),
        })
    }

    /// The session's own settings.
    pub fn settings(&self) -> SessionNetwork {
        self.settings.read().unwrap().0.clone()
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.settings.read().unwrap().1.clone()
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Checks `own` as this session's new settings, without applying them.
    pub fn check(&self, own: &SessionNetwork) -> Result<Policy, PolicyError> {
        Policy::new(&self.config, own)
    }

    /// Applies checked settings: connections asked for from now on follow
    /// them; open ones are left alone.
    pub fn apply(&self, own: SessionNetwork, policy: Policy) {
        *self.settings.write().unwrap() = (own, Arc::new(policy));
    }

    /// Logs an attempt, to be published with the others like it.
    pub fn record(&self, attempt: Attempt) {
        self.log.lock().unwrap().record(attempt);
        self.logged.notify_one();
    }

    /// Waits until something is logged.
    pub async fn logged(&self) {
        self.logged.notified().await;
    }

    /// The events due now (all of them when `all`), and whether attempts
    /// still wait to be published after them.
    pub fn take_due(&self, all: bool) -> (Vec<crate::events::EventKind>, bool) {
        let mut log = self.log.lock().unwrap();
        let due = log.take_due(Instant::now(), all);
        (due, !log.is_empty())
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Bytes carried so far (both directions).
    pub fn bytes_used(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A place among the session's open connections, or the limit.
    fn take_slot(self: &Arc<Self>) -> Result<Slot, Refusal> {
        let max = self.config.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| {
                Refusal::Limit(format!(
                    "the session already holds {max} connections open (network.max_connections)"
                ))
            })?;
        Ok(Slot(self.clone()))
    }

    /// Counts `n` more bytes; false once the session is past its budget.
    fn spend(&self, n: usize) -> bool {
        let used = self.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        used <= self.config.max_bytes.bytes()
    }

    fn budget_left(&self) -> Result<(), Refusal> {
        if self.bytes_used() >= self.config.max_bytes.bytes() {
            return Err(Refusal::Limit(format!(
                "the session has moved its {} of network traffic (network.max_bytes)",
                self.config.max_bytes
            )));
        }
        Ok(())
    }
}

/// One open connection, counted while it lives.
struct Slot(Arc<SessionEgress>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Asks a person whether a program may reach a host no allow pattern
/// names (`[network] ask = true`).
pub trait Asker: Send + Sync {
    /// `Ok`: why it may (for the log); `Err`: why not.
    fn ask<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'a, Result<String, String>>;
}

/// Decides, dials and carries the connection `ask` of `session_id`'s
/// program in `container`, until either end closes it, a limit cuts it, or
/// `stop` is cancelled. Returns what to log.
pub async fn carry(
    sandbox: &Sandbox,
    container: &str,
    session_id: &str,
    egress: &Arc<SessionEgress>,
    ask: EgressAsk,
    person: Option<&dyn Asker>,
    stop: &CancellationToken,
) -> Attempt {
    let started = Instant::now();
    let attempt = |decision, reason: String, up, down| Attempt {
        host: ask.host.clone(),
        port: ask.port,
        decision,
        reason,
        bytes_up: up,
        bytes_down: down,
        started,
        ended: Instant::now(),
    };
    let dialled = async {
        let policy = egress.policy();
        let host = Host::parse(&ask.host);
        let allowed_by = match policy.check_host(&host, ask.port) {
            Ok(by) => by,
            Err(Denial(why)) => match person {
                Some(person) if egress.config.ask && policy.unlisted(&host, ask.port) => person
                    .ask(&ask.host, ask.port)
                    .await
                    .map_err(Refusal::Policy)?,
                _ => return Err(Refusal::Policy(why)),
            },
        };
        let slot = egress.take_slot()?;
        egress.budget_left()?;
        let stream = dial(&policy, &host, ask.port, egress.config.connect_timeout()).await?;
        Ok::<_, Refusal>((allowed_by, slot, stream))
    };
    let (allowed_by, slot, stream) = match dialled.await {
        Ok(dialled) => dialled,
        Err(refusal) => {
            let (decision, status, reason_phrase, why) = match refusal {
                Refusal::Policy(why) => (
                    NetworkDecision::Denied,
                    403,
                    "Forbidden by Crogia's network policy",
                    why,
                ),
                Refusal::Limit(why) => (
                    NetworkDecision::Denied,
                    429,
                    "Crogia network limit reached",
                    why,
                ),
                Refusal::Unreachable(why) => (
                    NetworkDecision::Allowed,
                    502,
                    "Crogia cannot reach the host",
                    why,
                ),
            };
            let refusal = EgressRefusal {
                id: ask.id,
                status,
                reason: format!("{reason_phrase}: {}:{}", ask.host, ask.port),
                message: explain(session_id, &ask, decision, &why),
            };
            if let Err(e) = sandbox.refuse_egress(container, &refusal).await {
                tracing::debug!(container, error = %e, "refusal not delivered");
            }
            return attempt(decision, why, 0, 0);
        }
    };
    let connection = match sandbox.open_egress(container, ask.id).await {
        Ok(c) => c,
        Err(e) => {
            let why = match e {
                AgentError::Sandbox(SandboxError::NotFound(_)) => {
                    "the program stopped waiting before the connection was made".to_string()
                }
                e => format!("the sandbox could not take the connection: {e}"),
            };
            return attempt(
                NetworkDecision::Allowed,
                format!("{allowed_by}; {why}"),
                0,
                0,
            );
        }
    };
    let (up, down, cut) = pump(stream, connection, egress, stop).await;
    drop(slot);
    let reason = match cut {
        Some(cut) => format!("{allowed_by}; {cut}"),
        None => allowed_by,
    };
    attempt(NetworkDecision::Allowed, reason, up, down)
}

/// What a program reads when its connection is not made.
fn explain(session_id: &str, ask: &EgressAsk, decision: NetworkDecision, why: &str) -> String {
    let target = format!("{}:{}", ask.host, ask.port);
    match decision {
        NetworkDecision::Denied => format!(
            "Crogia refused the connection to {target}: {why}.\n\
             An operator can allow it for this session with PUT /api/sessions/{session_id}/network \
             (\"allow\"), or for every session in the [network] section of the server's \
             configuration (allow = [\"{target}\"]).\n"
        ),
        NetworkDecision::Allowed => {
            format!("Crogia allowed the connection to {target} but could not make it: {why}.\n")
        }
    }
}

/// Resolves `host` (unless it is an address) and connects to the first
/// address the policy allows dialling.
async fn dial(
    policy: &Policy,
    host: &Host,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, Refusal> {
    let deadline = tokio::time::Instant::now() + timeout;
    let addresses: Vec<IpAddr> = match host {
        Host::Address(addr) => vec![*addr],
        Host::Name(name) => {
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host((name.as_str(), port)))
                .await
            {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                Ok(Err(e)) => {
                    return Err(Refusal::Unreachable(format!("cannot resolve {name}: {e}")));
                }
                Err(_) => return Err(Refusal::Unreachable(format!("resolving {name} timed out"))),
            }
        }
    };
    let mut refused = None;
    let mut failed = None;
    for addr in addresses {
        if let Err(Denial(why)) = policy.check_address(addr, port) {
            refused.get_or_insert(why);
            continue;
        }
        match tokio::time::timeout_at(deadline, TcpStream::connect((addr, port))).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => failed = Some(format!("connecting to {addr}: {e}")),
            Err(_) => {
                failed = Some(format!("connecting to {addr} timed out"));
                break;
            }
        }
    }
    Err(match (failed, refused, host) {
        (Some(failed), _, _) => Refusal::Unreachable(failed),
        (None, Some(why), Host::Name(name)) => Refusal::Policy(format!("{name} resolves to {why}")),
        (None, Some(why), Host::Address(_)) => Refusal::Policy(why),
        (None, None, _) => Refusal::Unreachable("the name has no address".into()),
    })
}

/// Carries bytes both ways until both sides finished sending, one side
/// went away, the session's byte budget ran out, or `stop`. Returns the
/// bytes sent up and down, and why it was cut, if it was.
async fn pump(
    stream: TcpStream,
    connection: crate::sandbox::EgressConnection,
    egress: &SessionEgress,
    stop: &CancellationToken,
) -> (u64, u64, Option<String>) {
    let (mut from_remote, mut to_remote) = stream.into_split();
    let crate::sandbox::EgressConnection {
        mut to_program,
        mut from_program,
    } = connection;
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let over_budget = CancellationToken::new();
    let downstream = async {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            match from_remote.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    down.fetch_add(n as u64, Ordering::Relaxed);
                    if !egress.spend(n) {
                        over_budget.cancel();
                        break;
                    }
                    if to_program.send_data(buf.split().freeze()).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping the sender ends what the program reads.
        drop(to_program);
    };
    let upstream = async {
        while let Some(Ok(frame)) = from_program.frame().await {
            let Ok(data): Result<Bytes, _> = frame.into_data() else {
                continue;
            };
            up.fetch_add(data.len() as u64, Ordering::Relaxed);
            if !egress.spend(data.len()) {
                over_budget.cancel();
                break;
            }
            if to_remote.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_remote.shutdown().await;
    };
    let cut = tokio::select! {
        _ = async { tokio::join!(downstream, upstream) } => None,
        () = over_budget.cancelled() => Some(format!(
            "cut off: the session moved its {} of network traffic (network.max_bytes)",
            egress.config.max_bytes
        )),
        () = stop.cancelled() => Some("cut off: the session ended".to_string()),
    };
    (
        up.load(Ordering::Relaxed),
        down.load(Ordering::Relaxed),
        cut,
    )
}
