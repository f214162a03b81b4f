//! The status of every container this server owns, kept current from the
//! engine's event stream, so listing sessions costs no call to the engine.
//!
//! On every (re)connection the map is rebuilt from a container listing (events
//! missed while disconnected are thus accounted for), then kept up to date
//! from `create`, `start`, `die`, `pause`, `unpause` and `destroy` events.
//! Changes are broadcast, including `removed` for containers that vanished.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::Sandbox;

/// The status reported for a container that no longer exists.
pub const REMOVED: &str = "removed";

/// One container changing status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerChange {
    pub id: String,
    /// `created`, `running`, `exited`, `paused`, or [`REMOVED`].
    pub status: String,
}

#[derive(Debug)]
pub struct ContainerWatch {
    statuses: RwLock<HashMap<String, String>>,
    /// Whether the map reflects the engine (false until the first listing
    /// and while the engine is unreachable).
    synced: std::sync::atomic::AtomicBool,
    changes: broadcast::Sender<ContainerChange>,
}

impl ContainerWatch {
    /// The last known status of a container; `None` when unknown (the
    /// engine has not been reached, or the container is not ours).
    pub fn status(&self, container: &str) -> Option<String> {
        let known = self.statuses.read().unwrap().get(container).cloned();
        match known {
            Some(s) => Some(s),
            None if self.is_synced() => Some(REMOVED.to_string()),
            None => None,
        }
    }

    /// The ids of every container currently known.
    pub fn containers(&self) -> Vec<String> {
        self.statuses.read().unwrap().keys().cloned().collect()
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ContainerChange> {
        self.changes.subscribe()
    }

    /// Records a status we caused ourselves, without waiting for its event.
    pub fn record(&self, container: &str, status: &str) {
        let mut map = self.statuses.write().unwrap();
        if status == REMOVED {
            map.remove(container);
        } else {
            map.insert(container.to_string(), status.to_string());
        }
    }

    fn apply(&self, id: &str, status: &str) {
        let changed = {
            let mut map = self.statuses.write().unwrap();
            if status == REMOVED {
                map.remove(id).is_some()
            } else {
                map.insert(id.to_string(), status.to_string()).as_deref() != Some(status)
            }
        };
        if changed {
            let _ = self.changes.send(ContainerChange {
                id: id.to_string(),
                status: status.to_string(),
            });
        }
    }

    /// Replaces the whole map with a fresh listing, announcing differences.
    fn resync(&self, listing: HashMap<String, String>) {
        let old = std::mem::take(&mut *self.statuses.write().unwrap());
        for (id, status) in &listing {
            self.apply(id, status);
        }
        for id in old.keys().filter(|id| !listing.contains_key(*id)) {
            let _ = self.changes.send(ContainerChange {
                id: id.clone(),
                status: REMOVED.to_string(),
            });
        }
        self.synced
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn status_of(action: &str) -> Option<&'static str> {
    Some(match action {
        "create" => "created",
        "start" | "unpause" | "restart" => "running",
        "die" => "exited",
        "pause" => "paused",
        "destroy" => REMOVED,
        _ => return None,
    })
}

impl Sandbox {
    /// Starts watching the containers carrying `label` (`key=value`).
    pub fn watch_containers(&self, label: String) -> Arc<ContainerWatch> {
        let (changes, _) = broadcast::channel(1024);
        let watch = Arc::new(ContainerWatch {
            statuses: RwLock::new(HashMap::new()),
            synced: std::sync::atomic::AtomicBool::new(false),
            changes,
        });
        let weak = Arc::downgrade(&watch);
        let sandbox = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                match sandbox.follow_events(&label, &weak).await {
                    Ok(()) => backoff = Duration::from_millis(200),
                    Err(e) => {
                        tracing::debug!(error = %e, "container event stream interrupted");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
                if let Some(w) = weak.upgrade() {
                    w.synced.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(backoff).await;
            }
        });
        watch
    }

    /// Lists, then follows the event stream until it ends or fails.
    async fn follow_events(
        &self,
        label: &str,
        watch: &std::sync::Weak<ContainerWatch>,
    ) -> Result<(), super::SandboxError> {
        let docker = self.engine.client().await?;
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![label.to_string()]),
            (
                "event".to_string(),
                [
                    "create", "start", "die", "pause", "unpause", "destroy", "restart",
                ]
                .map(String::from)
                .to_vec(),
            ),
        ]);
        // Subscribe before listing so nothing between the two is missed.
        let mut events = docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        let listing = self.find_by_labels(&[label]).await?;
        let Some(w) = watch.upgrade() else {
            return Ok(());
        };
        w.resync(listing.into_iter().map(|c| (c.id, c.status)).collect());
        drop(w);
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| self.engine.classify(e))?;
            let (Some(action), Some(id)) = (event.action, event.actor.and_then(|a| a.id)) else {
                continue;
            };
            let Some(status) = status_of(&action) else {
                continue;
            };
            let Some(w) = watch.upgrade() else {
                return Ok(());
            };
            w.apply(&id, status);
        }
        Ok(())
    }
}
