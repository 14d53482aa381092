//! From the deployment's plain data to the scheduler's and the runtime's
//! inputs: a [`Workload`] and a [`ContainerConfig`] per `[[workload]]`, a
//! [`Node`] for `[node]`.

use crate::boot::VerifiedComponent;
use crate::identity::{IdentityContext, TrustVector};
use crate::runtime::{ContainerConfig, StdinGrant};
use crate::scheduler::{
    Capacity, Constraint, ConstraintType, Node, ResourceRequirements, Workload,
};

use super::types::{KnownLabels, NodeConfig, PreferenceKind, WorkloadSpec};

impl WorkloadSpec {
    /// The scheduler's [`Workload`] for this entry. Its trust is left at
    /// the default: the kernel derives it from the tenant's policy and the
    /// component's verified signers when it is submitted, and a deployment
    /// can never claim it.
    ///
    /// Location alternatives become one location constraint (any may
    /// match); every other entry is its own constraint; preferences keep
    /// their weight.
    pub fn workload(&self) -> Workload {
        let identity = IdentityContext::new(
            self.tenant.clone(),
            self.principal.clone(),
            TrustVector::default(),
        );
        let mut w = Workload::new(self.name.clone(), self.priority, identity);
        let r = &self.resources;
        let defaults = ResourceRequirements::default();
        let mut req = ResourceRequirements::new(
            r.cpu_millis.unwrap_or(defaults.cpu_millis),
            r.memory.unwrap_or(defaults.memory),
        );
        req.storage(r.storage.unwrap_or(0))
            .network(self.capabilities.network);
        if let Some(f) = r.fuel {
            req.fuel(f);
        }
        if let Some(t) = r.timeout {
            req.timeout(t);
        }
        w.requirements(req);
        let c = &self.constraints;
        if !c.location.is_empty() {
            w.constraint(Constraint::location(c.location.join(",")));
        }
        for h in &c.hardware {
            w.constraint(Constraint::hardware(h.clone()));
        }
        for n in &c.network {
            w.constraint(Constraint::network(n.clone()));
        }
        for l in &c.labels {
            w.constraint(Constraint::label(l.clone()));
        }
        for a in &c.affinity {
            w.constraint(Constraint::affinity(a.clone()));
        }
        for a in &c.anti_affinity {
            w.constraint(Constraint::anti_affinity(a.clone()));
        }
        for p in &c.preferred {
            let t = match p.kind {
                PreferenceKind::Location => ConstraintType::Location,
                PreferenceKind::Hardware => ConstraintType::Hardware,
                PreferenceKind::Network => ConstraintType::Network,
                PreferenceKind::Label => ConstraintType::Custom("label".into()),
                PreferenceKind::Affinity => ConstraintType::Affinity,
                PreferenceKind::AntiAffinity => ConstraintType::AntiAffinity,
            };
            w.constraint(Constraint::new(t, p.value.clone()).prefer(p.weight));
        }
        w.labels = self.labels.clone();
        w
    }

    /// The runtime's [`ContainerConfig`] for this entry running
    /// `component`: named after the workload, with its limits (memory,
    /// fuel, timeout, open files; the runtime's defaults where none is
    /// written), its restart policy, its file I/O mode and exactly the
    /// capabilities it lists.
    pub fn container(&self, component: VerifiedComponent) -> ContainerConfig {
        let r = &self.resources;
        let mut container = ContainerConfig::new(component);
        container
            .name(self.name.clone())
            .workload(self.name.clone())
            .max_memory(r.memory.unwrap_or(ResourceRequirements::default().memory))
            .timeout(r.timeout)
            .restart(self.restart)
            .file_io(self.file_io)
            .network(self.capabilities.network);
        if r.fuel.is_some() {
            container.fuel(r.fuel);
        }
        if let Some(n) = r.open_files {
            container.max_open_files(n as usize);
        }
        for d in &self.capabilities.dirs {
            container.dir(&d.host, &d.guest, d.read_only);
        }
        for (k, v) in &self.capabilities.env {
            container.env(k, v);
        }
        for a in &self.capabilities.args {
            container.arg(a);
        }
        if let Some(path) = &self.capabilities.stdin {
            container.stdin(StdinGrant::File(path.clone()));
        }
        container
    }
}

impl NodeConfig {
    /// This host as a placement node: CPU defaults to `cores` cores, memory
    /// to 1 GiB, storage to 0, containers to unlimited.
    pub fn node(&self, cores: usize) -> Node {
        let capacity = Capacity {
            cpu_millis: self.cpu_millis.unwrap_or(cores as u64 * 1000),
            memory: self.memory.unwrap_or(1 << 30),
            storage: self.storage.unwrap_or(0),
            containers: self.containers.unwrap_or(u32::MAX),
        };
        let mut node = Node::new(
            self.id.as_str(),
            self.region.clone(),
            self.zone.clone(),
            capacity,
        );
        node.trust(self.trust);
        for h in &self.hardware {
            node.hardware(h.clone());
        }
        for n in &self.network {
            node.network(n.clone());
        }
        for (k, v) in &self.labels {
            node.label(k.clone(), v.clone());
        }
        node
    }
}

impl KnownLabels {
    /// The labels present on `nodes`, for
    /// [`Deployment::check_labels`](super::Deployment::check_labels).
    pub fn of(nodes: &[Node]) -> KnownLabels {
        let mut k = KnownLabels::default();
        for n in nodes {
            k.hardware.extend(n.hardware.iter().cloned());
            k.network.extend(n.network.iter().cloned());
            k.label_keys.extend(n.labels.keys().cloned());
        }
        k
    }
}
