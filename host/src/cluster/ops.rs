//! What an operator does to the cluster: deploy, undeploy, stop, pause and
//! resume. Each changes the desired state only; no host is called.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;

use super::ClusterError;
use super::records::{
    ComponentRef, DEPLOYMENT_PAYLOAD_TYPE, DeploymentRecord, Desired, valid_name,
};
use super::store::{self, Cluster};
use crate::boot::{DEFAULT_MAX_COMPONENT_SIZE, Envelope, MAX_STATEMENT_BYTES};
use crate::deployment::{BootMode, Deployment, MAX_DEPLOYMENT_BYTES};
use crate::keys::SigningKey;

/// What [`deploy`] stored.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeployReport {
    /// The deployment's name.
    pub name: String,
    /// Each workload's component digest (blake3 hex), by workload.
    pub components: BTreeMap<String, String>,
}

fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ClusterError> {
    let io = |source| ClusterError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > limit {
        return Err(ClusterError::Invalid(format!(
            "{}: {} bytes, more than {limit}",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path).map_err(io)
}

/// The name a deployment file deploys as when none is given: the name of
/// the directory it is in.
pub fn default_name(path: &Path) -> String {
    std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.parent()?.file_name()?.to_str().map(str::to_owned))
        .unwrap_or_else(|| "default".into())
}

/// Deploys the `forgeone.toml` at `path` as `name`: uploads each
/// workload's component and signature envelope to the object store under
/// their blake3 digests (the same bytes are stored once), then writes the
/// deployment as desired state. Hosts verify every component against their
/// own anchor before running it. The file must use `boot = "signatures"`:
/// each component carries its own signature.
///
/// The deployment is signed by `keys` (deploy keys): a host runs it only
/// when a threshold of its own anchor's deploy keys signed it. With no
/// keys it is stored unsigned, and every host refuses it.
pub async fn deploy(
    cluster: &Cluster,
    path: &Path,
    name: &str,
    keys: &[&SigningKey],
) -> Result<DeployReport, ClusterError> {
    if !valid_name(name) {
        return Err(ClusterError::Invalid(format!(
            "deployment name `{name}` is not [A-Za-z0-9_-]{{1,64}}"
        )));
    }
    let bytes = read(path, MAX_DEPLOYMENT_BYTES)?;
    let source = String::from_utf8(bytes)
        .map_err(|_| ClusterError::Invalid(format!("{} is not UTF-8", path.display())))?;
    let deployment = Deployment::parse(&source, path)?;
    if deployment.settings.boot != BootMode::Signatures {
        return Err(ClusterError::Invalid(format!(
            "{}: a cluster deployment needs `boot = \"signatures\"` (each component signed on its own)",
            path.display()
        )));
    }
    let mut components = BTreeMap::new();
    let mut report = BTreeMap::new();
    for spec in &deployment.workloads {
        if !valid_name(&spec.name) {
            return Err(ClusterError::Invalid(format!(
                "workload name `{}` is not [A-Za-z0-9_-]{{1,64}}",
                spec.name
            )));
        }
        let wasm = read(&spec.component, DEFAULT_MAX_COMPONENT_SIZE)?;
        let sig_path = spec.signature.clone().unwrap_or_else(|| {
            let mut p = spec.component.clone().into_os_string();
            p.push(".sig.json");
            p.into()
        });
        let envelope = read(&sig_path, MAX_STATEMENT_BYTES as u64)?;
        let component = cluster.put_object("component", &wasm).await?;
        let envelope = cluster.put_object("envelope", &envelope).await?;
        report.insert(spec.name.clone(), component.to_hex());
        components.insert(
            spec.name.clone(),
            ComponentRef {
                component: component.to_hex(),
                envelope: envelope.to_hex(),
                size: wasm.len() as u64,
            },
        );
    }
    let mut record = DeploymentRecord {
        name: name.to_string(),
        file: path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("forgeone.toml")
            .to_string(),
        source,
        components,
        signature: None,
        desired: BTreeMap::new(),
        deployed_at: Utc::now(),
    };
    if !keys.is_empty() {
        let payload = serde_json::to_vec(&record.statement())
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let mut envelope = Envelope::new(DEPLOYMENT_PAYLOAD_TYPE, payload);
        for key in keys {
            envelope.sign(key);
        }
        record.signature = Some(String::from_utf8_lossy(&envelope.to_json()).into_owned());
    }
    store::put(&cluster.deployments, name, &record).await?;
    Ok(DeployReport {
        name: name.to_string(),
        components: report,
    })
}

/// Removes deployment `name`: its replicas are unassigned and stop.
pub async fn undeploy(cluster: &Cluster, name: &str) -> Result<(), ClusterError> {
    if store::get::<DeploymentRecord>(&cluster.deployments, name)
        .await?
        .is_none()
    {
        return Err(ClusterError::NotFound(format!("deployment `{name}`")));
    }
    store::delete(&cluster.deployments, name).await
}

/// Sets what `workload` should be (`DEPLOYMENT/WORKLOAD`, or a workload
/// name found in exactly one deployment); the host that runs it carries it
/// out. Retries when another operator wrote the deployment meanwhile.
pub async fn set_desired(
    cluster: &Cluster,
    workload: &str,
    desired: Desired,
) -> Result<String, ClusterError> {
    for _ in 0..10 {
        let (name, record) = find(cluster, workload).await?;
        let mut value = record.value;
        let short = workload.rsplit('/').next().unwrap_or(workload).to_string();
        match desired {
            Desired::Running => value.desired.remove(&short),
            d => value.desired.insert(short.clone(), d),
        };
        let written =
            store::compare_and_set(&cluster.deployments, &name, &value, Some(record.revision))
                .await?;
        if written.is_some() {
            return Ok(format!("{name}/{short}"));
        }
    }
    Err(ClusterError::Invalid(format!(
        "deployment of `{workload}` kept changing; try again"
    )))
}

async fn find(
    cluster: &Cluster,
    workload: &str,
) -> Result<(String, store::Versioned<DeploymentRecord>), ClusterError> {
    if let Some((deployment, w)) = workload.split_once('/') {
        let record = store::get::<DeploymentRecord>(&cluster.deployments, deployment)
            .await?
            .ok_or_else(|| ClusterError::NotFound(format!("deployment `{deployment}`")))?;
        if !record.value.components.contains_key(w) {
            return Err(ClusterError::NotFound(format!(
                "workload `{w}` in deployment `{deployment}`"
            )));
        }
        return Ok((deployment.to_string(), record));
    }
    let mut found = Vec::new();
    for (name, record) in store::all::<DeploymentRecord>(&cluster.deployments).await? {
        if let Ok(r) = record
            && r.value.components.contains_key(workload)
        {
            found.push((name, r));
        }
    }
    match found.len() {
        0 => Err(ClusterError::NotFound(format!("workload `{workload}`"))),
        1 => Ok(found.remove(0)),
        _ => Err(ClusterError::Invalid(format!(
            "workload `{workload}` is in {} deployments ({}); name it as DEPLOYMENT/{workload}",
            found.len(),
            found
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
