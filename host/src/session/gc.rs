//! `crogia gc`: containers labelled with a data directory's instance id that
//! belong to no stored session.

use crate::config::Config;
use crate::datadir::DataDirLock;
use crate::sandbox::{ContainerInfo, DockerEngine, LABEL_INSTANCE, Sandbox};
use crate::store::Store;

/// Finds the containers labelled with this data directory's instance id that
/// belong to no stored session, and (unless `dry_run`) removes them. What
/// `crogia gc` does. Refused while a server runs on the same data directory:
/// its warm pool and the containers of sessions being created belong to no
/// stored session yet, and would be taken for orphans.
pub async fn collect_garbage(config: &Config, dry_run: bool) -> anyhow::Result<Vec<ContainerInfo>> {
    let _lock = DataDirLock::acquire(&config.server.data_dir, "`crogia gc`")?;
    let store = Store::open(&config.server.data_dir).await?;
    let instance = store.instance_id().await?;
    let known: Vec<String> = store
        .sessions()
        .await?
        .into_iter()
        .map(|s| s.container_id)
        .collect();
    store.close().await;
    let sandbox = Sandbox::new(
        DockerEngine::new(&config.sandbox.docker_host),
        config.sandbox.clone(),
    );
    let ours = sandbox
        .find_by_labels(&[&format!("{LABEL_INSTANCE}={instance}")])
        .await?;
    let orphans: Vec<_> = ours
        .into_iter()
        .filter(|c| !known.contains(&c.id))
        .collect();
    if !dry_run {
        for c in &orphans {
            sandbox.remove(&c.id).await?;
        }
    }
    Ok(orphans)
}
