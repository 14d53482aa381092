//! `nodes.toml`: `forgeone::deployment::parse_nodes`, then a plan of a
//! fixed deployment onto the nodes, as `forgeone plan --nodes` does.
//!
//! Input: the file's text.
#![no_main]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use forgeone::Deployment;
use forgeone::deployment::parse_nodes;
use forgeone::scheduler::StaticInventory;
use forgeone_fuzz::seeds::DEPLOYMENT_TOML;
use libfuzzer_sys::fuzz_target;

static DEPLOYMENT: LazyLock<Deployment> = LazyLock::new(|| {
    Deployment::parse(DEPLOYMENT_TOML, Path::new("forgeone.toml"))
        .expect("the fixed deployment parses")
});

fuzz_target!(
    init: forgeone_fuzz::seeds::write_if_asked("nodes"),
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let nodes = match parse_nodes(text, Path::new("/fuzz/nodes.toml")) {
            Ok(nodes) => nodes,
            Err(e) => {
                forgeone_fuzz::debug(|| format!("refused: {e}"));
                let _ = e.to_string();
                return;
            }
        };
        let count = nodes.len();
        let planned = DEPLOYMENT.plan(Arc::new(StaticInventory::new(nodes)), 4);
        forgeone_fuzz::debug(|| format!("{count} nodes; plan: {:?}", planned.as_ref().map(|p| p.all_placed()).map_err(|e| e.to_string())));
        match planned {
            Ok(plan) => {
                assert_eq!(plan.nodes, count);
                let _ = serde_json::to_string(&plan);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
);
