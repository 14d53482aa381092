//! A deployment file (`forgeone.toml`) as a running kernel: the local node
//! from `[node]`, the tenants' policies, the supervisor's settings, and one
//! workload per `[[workload]]` whose component is the one boot verified
//! from that file.

use crate::audit::AuditLog;
use crate::boot::BootContext;
use crate::deployment::{Deployment, KnownLabels, WorkloadSpec};
use crate::runtime::{BackoffConfig, EngineConfig, RuntimeConfig};
use crate::scheduler::ResourceRequirements;

use super::{Kernel, KernelConfig, KernelError, NotRun, ScheduleReport};

impl KernelConfig {
    /// The kernel a deployment describes: its `[node]` as the local node
    /// (CPU defaults to this machine's cores), its tenants' policies (no
    /// default: other tenants are refused), restart backoff and crash-loop
    /// detection from `[supervision]` (whose `healthy_after` is also the
    /// boot assessment's), compiled components cached under the state
    /// directory, and the network available only if some tenant's policy
    /// grants it. A constraint naming a label the node does not have is a
    /// typo, not an unschedulable workload: it is refused here.
    ///
    /// The engine uses wasmtime's pooling allocator with copy-on-write
    /// memory images, sized from the deployment ([`pool_size`]), or
    /// allocates on demand, with a warning naming why, when the deployment
    /// does not fit a pool
    /// ([`EngineConfig::pooling_or_on_demand`]; the runtime's
    /// [`allocation`](crate::runtime::Runtime::allocation) says which).
    pub fn from_deployment(deployment: &Deployment) -> Result<KernelConfig, KernelError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let node = deployment.node.node(cores);
        deployment.check_labels(&KnownLabels::of(std::slice::from_ref(&node)))?;
        Ok(KernelConfig::for_node(
            deployment,
            node,
            &deployment.settings.state_dir,
        ))
    }

    /// The kernel a deployment describes on a host of a cluster: `node`
    /// (the host's own description, not the file's `[node]`) as the local
    /// node, and the rest as [`KernelConfig::from_deployment`] with
    /// compiled components cached under `state_dir`. The constraints'
    /// labels are not checked against this one node: the cluster's
    /// placement checked them against every node before it chose this one.
    pub fn for_node(
        deployment: &Deployment,
        node: crate::scheduler::Node,
        state_dir: &std::path::Path,
    ) -> KernelConfig {
        let settings = &deployment.settings;
        let sup = settings.supervision;
        let mut backoff = BackoffConfig::new();
        backoff
            .initial(sup.backoff)
            .max(sup.max_backoff)
            .reset_after(sup.healthy_after)
            .crash_loop_threshold(sup.quarantine_after);
        let (instances, max_memory) = pool_size(deployment);
        let mut engine = EngineConfig::new();
        engine.pooling_or_on_demand(instances, MEMORIES_PER_INSTANCE, max_memory);
        let mut runtime = RuntimeConfig::new();
        runtime
            .engine(engine)
            .cache_dir(state_dir.join("cache"))
            .backoff(backoff)
            // The master switch; each container is checked against its
            // own tenant's policy when it is submitted.
            .allow_network(deployment.tenants.iter().any(|t| t.network));
        let mut config = KernelConfig::new(node, deployment.policies());
        config.runtime(runtime).healthy_after(sup.healthy_after);
        config
    }
}

/// Linear memories a pool slot set holds per instance: a component's own
/// memory and one more (an adapter's, or a second module's).
const MEMORIES_PER_INSTANCE: u32 = 2;

/// The pooling allocator's size for `deployment`: how many component
/// instances may be alive at once, and the largest linear memory.
///
/// Instances: every copy of every workload (`replicas`, an upper bound for
/// one host) runs one instance, and a restart frees its instance before it
/// takes the next; a quarter more (at least 16) leaves room for workloads
/// submitted later and for plugin calls. The largest memory is the largest
/// memory limit of any workload (the default limit for those that set
/// none).
pub fn pool_size(deployment: &Deployment) -> (u32, u64) {
    let copies: u32 = deployment
        .workloads
        .iter()
        .map(|w| w.replicas)
        .fold(0, u32::saturating_add);
    let instances = copies.saturating_add((copies / 4).max(16));
    let default_memory = ResourceRequirements::default().memory;
    let max_memory = deployment
        .workloads
        .iter()
        .map(|w| w.resources.memory.unwrap_or(default_memory))
        .max()
        .unwrap_or(default_memory);
    (instances, max_memory)
}

impl Kernel {
    /// Runs a deployment: a kernel configured by
    /// [`KernelConfig::from_deployment`] with `boot`, every workload
    /// submitted ([`Kernel::deploy`]) and placed. Returns the kernel and
    /// what the first scheduling round did; [`Kernel::workloads`] shows
    /// every workload from then on, including those refused at boot.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use forgeone::audit::{AuditConfig, AuditLog};
    /// use forgeone::kernel::Kernel;
    /// use forgeone::{Deployment, SigningKey};
    ///
    /// let deployment = Deployment::from_file("forgeone.toml")?;
    /// let key = || SigningKey::from_file(&deployment.settings.host_key);
    /// let audit = AuditLog::open(&deployment.settings.audit_log, key()?, &AuditConfig::new())?;
    /// let boot = deployment.boot_builder().audit(audit.clone()).host_key(key()?).run()?;
    /// let (kernel, _report) = Kernel::from_deployment(&deployment, boot, audit)?;
    /// kernel.wait_settled().await;
    /// for w in kernel.workloads() {
    ///     println!("{}: {:?}", w.name, w.container.map(|c| c.status));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn from_deployment(
        deployment: &Deployment,
        boot: BootContext,
        audit: AuditLog,
    ) -> Result<(Kernel, ScheduleReport), KernelError> {
        let mut config = KernelConfig::from_deployment(deployment)?;
        config.boot(boot);
        Kernel::from_deployment_with(deployment, config, audit)
    }

    /// Like [`Kernel::from_deployment`] with a configuration of the
    /// caller's (start from [`KernelConfig::from_deployment`] and set the
    /// boot, workers, an output sink, ...).
    pub fn from_deployment_with(
        deployment: &Deployment,
        config: KernelConfig,
        audit: AuditLog,
    ) -> Result<(Kernel, ScheduleReport), KernelError> {
        let kernel = Kernel::new(config, audit)?;
        kernel.deploy(deployment)?;
        let report = kernel.schedule()?;
        Ok((kernel, report))
    }

    /// Submits every workload of `deployment`, each with the component the
    /// kernel's boot ([`KernelConfig::boot`]) verified from the file the
    /// workload names. A workload whose component was refused at boot, or
    /// is not part of the boot at all, is recorded as not run, with the
    /// reason; one the kernel refuses on submit (network not granted, no
    /// such worker) likewise. Nothing is placed until
    /// [`Kernel::schedule`].
    pub fn deploy(&self, deployment: &Deployment) -> Result<(), KernelError> {
        for spec in &deployment.workloads {
            let component = match self.boot() {
                None => Err(
                    "the kernel has no boot to take components from (KernelConfig::boot)"
                        .to_string(),
                ),
                Some(boot) => match boot.lookup(&spec.component) {
                    Some(Ok(c)) => Ok(c.clone()),
                    Some(Err(left_out)) => Err(left_out.reason.clone()),
                    None => Err(format!(
                        "{} is not part of the boot ({})",
                        spec.component.display(),
                        not_listed(deployment)
                    )),
                },
            };
            let result = match component {
                Ok(component) => self.submit_spec(spec, component),
                Err(reason) => {
                    self.submit_not_run(spec.workload(), NotRun::Boot { reason });
                    Ok(())
                }
            };
            match result {
                Ok(()) => {}
                Err(KernelError::Audit(e)) => return Err(KernelError::Audit(e)),
                Err(e) => self.submit_not_run(
                    spec.workload(),
                    NotRun::Refused {
                        reason: e.to_string(),
                    },
                ),
            }
        }
        Ok(())
    }

    fn submit_spec(
        &self,
        spec: &WorkloadSpec,
        component: crate::boot::VerifiedComponent,
    ) -> Result<(), KernelError> {
        let workload = spec.workload();
        let container = spec.container(component);
        match spec.worker {
            None => self.submit(workload, container).map(drop),
            Some(worker) => self.submit_pinned(workload, container, worker).map(drop),
        }
    }
}

fn not_listed(deployment: &Deployment) -> String {
    use crate::deployment::BootMode;
    match deployment.settings.boot {
        BootMode::Manifest => format!(
            "only components listed in the boot manifest {} run",
            deployment.settings.boot_manifest.display()
        ),
        BootMode::Signatures => "it was not verified at boot".to_string(),
    }
}
