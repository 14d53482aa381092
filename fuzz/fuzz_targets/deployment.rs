//! `forgeone.toml`: `Deployment::parse`, then what `forgeone plan` and
//! `forgeone up` do with a valid one before anything runs: each workload's
//! scheduler and runtime inputs, the policies, the local node, the boot
//! set-up, and a plan onto the local node and onto a fixed inventory.
//!
//! Input: the file's text.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use forgeone::Deployment;
use forgeone::boot::VerifiedComponent;
use forgeone::deployment::parse_nodes;
use forgeone::scheduler::StaticInventory;
use forgeone_fuzz::seeds::{COMPONENT, NODES_TOML};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: forgeone_fuzz::seeds::write_if_asked("deployment"),
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let deployment = match Deployment::parse(text, Path::new("/fuzz/forgeone.toml")) {
            Ok(deployment) => deployment,
            Err(e) => {
                forgeone_fuzz::debug(|| format!("refused: {e}"));
                let _ = e.to_string();
                assert!(!e.problems().is_empty(), "a refusal names its problems");
                return;
            }
        };
        for w in &deployment.workloads {
            let _ = w.workload();
            let _ = w.container(VerifiedComponent::unsigned("fuzz", COMPONENT));
            assert!(deployment.line_of(&w.name).is_some());
        }
        let _ = deployment.policies();
        let _ = deployment.boot_builder();
        let local = deployment.node.node(2);
        if let Ok(plan) = deployment.plan(Arc::new(StaticInventory::new(vec![local])), 4) {
            let _ = serde_json::to_string(&plan);
            assert_eq!(plan.workloads.len(), deployment.workloads.len());
        }
        let nodes = parse_nodes(NODES_TOML, Path::new("nodes.toml")).expect("the fixed inventory parses");
        let planned = deployment.plan(Arc::new(StaticInventory::new(nodes)), 4);
        forgeone_fuzz::debug(|| format!("{} workloads; plan onto the inventory: {:?}", deployment.workloads.len(), planned.as_ref().map(|p| p.all_placed()).map_err(|e| e.to_string())));
        if let Ok(plan) = planned {
            let _ = serde_json::to_string(&plan);
        }
    }
);
