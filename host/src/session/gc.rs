//! `crogia gc`: containers (and workspace volumes, on an engine that is not
//! local) labelled with a data directory's instance id that belong to no
//! stored session.

use crate::config::Config;
use crate::datadir::DataDirLock;
use crate::sandbox::{
    ContainerInfo, DockerEngine, LABEL_INSTANCE, LABEL_LAYER, LABEL_SESSION, Sandbox,
};
use crate::store::Store;
use crate::workspace::Workspace;

/// Finds the containers labelled with this data directory's instance id that
/// belong to no stored session, and (unless `dry_run`) removes them. What
/// `crogia gc` does. Refused while a server runs on the same data directory:
/// its warm pool and the containers of sessions being created belong to no
/// stored session yet, and would be taken for orphans.
pub async fn collect_garbage(config: &Config, dry_run: bool) -> anyhow::Result<Garbage> {
    let _lock = DataDirLock::acquire(&config.server.data_dir, "`crogia gc`")?;
    let store = Store::for_config(config).await?;
    let instance = store.instance_id().await?;
    let sessions = store.sessions().await?;
    let known: Vec<String> = sessions.iter().map(|s| s.container_id.clone()).collect();
    store.close().await;
    let server = store.server().to_string();
    let mut garbage = Garbage::default();
    for engine in config.sandbox.engines() {
        let sandbox = Sandbox::new(
            DockerEngine::named(&engine.name, &engine.docker_host),
            config.sandbox.for_engine(&engine),
        );
        let ours = sandbox
            .find_by_labels(&[&format!("{LABEL_INSTANCE}={instance}")])
            .await?;
        // Another server sharing the database makes containers (its pool,
        // the session it is creating) that no stored session names yet:
        // its own gc sees to them.
        let orphans: Vec<_> = ours
            .into_iter()
            .filter(|c| !known.contains(&c.id) && super::made_here(&c.labels, &server))
            .collect();
        if !dry_run {
            for c in &orphans {
                sandbox.remove(&c.id).await?;
            }
        }
        // Workspace volumes whose session is gone (after the containers
        // that used them), and fork layers no session stands on.
        let volumes: Vec<String> = sandbox
            .volumes_by_labels(&[&format!("{LABEL_INSTANCE}={instance}")])
            .await?
            .into_iter()
            .filter(|(_, labels)| {
                if !super::made_here(labels, &server) {
                    return false;
                }
                if let Some(layer) = labels.get(LABEL_LAYER) {
                    return !sessions
                        .iter()
                        .any(|s| Workspace::record_on_layer(&s.workdir, layer));
                }
                labels
                    .get(LABEL_SESSION)
                    .is_none_or(|id| !sessions.iter().any(|s| &s.id == id))
            })
            .map(|(name, _)| name)
            .collect();
        if !dry_run {
            for name in &volumes {
                sandbox
                    .remove_workspace(&Workspace::Volume(name.clone()))
                    .await?;
            }
        }
        garbage.containers.extend(orphans);
        garbage.volumes.extend(volumes);
    }
    Ok(garbage)
}

/// What `crogia gc` found (and removed unless it was a dry run).
#[derive(Debug, Default)]
pub struct Garbage {
    pub containers: Vec<ContainerInfo>,
    /// Workspace volumes, by name.
    pub volumes: Vec<String>,
}
