//! The deployment file (`forgeone.toml`) and `forgeone plan`'s library
//! half: every bad input is a precise error naming the line or workload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use forgeone::boot::BootPolicy;
use forgeone::deployment::{
    self, BootMode, Deployment, DeploymentError, PlanError, PreferenceKind,
};
use forgeone::runtime::{FileIo, RestartPolicy};
use forgeone::scheduler::{ScheduleError, StaticInventory};
use forgeone::{Isolation, Priority};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/plan")
        .join(name)
}

/// Parses `text` as `/deploy/forgeone.toml`.
fn parse(text: &str) -> Result<Deployment, DeploymentError> {
    Deployment::parse(text, Path::new("/deploy/forgeone.toml"))
}

/// The single problem of a bad deployment, as `line:column: message`.
fn problem(text: &str) -> String {
    let err = parse(text).expect_err("the deployment must be refused");
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    problems[0].to_string()
}

/// The boot mode and a tenant (the boot line replaces the usual leading
/// blank line, so line numbers in the tests stay as they read).
const TENANT: &str = r#"boot = "signatures"
[[tenant]]
name = "acme"
max_priority = "high"
"#;

#[test]
fn the_sample_deployment_parses_with_units_and_defaults() {
    let d = Deployment::from_file(data("forgeone.toml")).unwrap();
    let dir = data("");
    assert_eq!(d.settings.state_dir, dir.join(".forgeone"));
    assert_eq!(d.settings.trust_anchor, dir.join(".forgeone/anchor.json"));
    assert_eq!(d.settings.audit_log, dir.join(".forgeone/audit.jsonl"));
    assert_eq!(d.settings.boot_policy, BootPolicy::Recover);
    assert_eq!(d.node.zone, "eu-west-1a");
    assert_eq!(d.node.memory, Some(4 << 30));
    let batchco = d.tenant("batchco").unwrap();
    assert_eq!(batchco.max_priority, Priority::Low);
    assert_eq!(batchco.isolation, Isolation::Tenant);
    assert_eq!(batchco.cpu_share, Some(0.25));

    let api = d.workload("api-1").unwrap();
    assert_eq!(api.priority, Priority::Critical);
    assert_eq!(api.principal, "svc-api");
    assert_eq!(api.component, dir.join("components/api.wasm"));
    assert_eq!(
        api.signature,
        Some(dir.join("components/api.wasm.sig.json"))
    );
    assert_eq!(api.resources.fuel, Some(50_000_000));
    assert_eq!(api.resources.memory, Some(256 << 20));
    assert_eq!(api.resources.cpu_millis, Some(1000));
    assert_eq!(api.resources.timeout, Some(Duration::from_secs(30)));
    assert_eq!(api.restart, RestartPolicy::Always);
    assert_eq!(api.capabilities.args, ["--port", "8080"]);
    assert!(api.capabilities.network);
    assert_eq!(
        api.constraints.labels,
        ["disk in (ssd, nvme)", "tier notin (spot)"]
    );

    let db = d.workload("db").unwrap();
    assert_eq!(db.principal, "db", "principal defaults to the name");
    assert_eq!(db.resources.storage, Some(50 << 30));
    assert_eq!(db.constraints.preferred[0].kind, PreferenceKind::Location);
    assert_eq!(db.constraints.preferred[0].weight, 50);
    let dir_grant = &db.capabilities.dirs[0];
    assert_eq!(dir_grant.host, dir.join("data/db"));
    assert_eq!(dir_grant.guest, "/data");
    assert!(!dir_grant.read_only);
    assert_eq!(
        d.workload("crunch").unwrap().resources.fuel,
        Some(5_000_000_000)
    );
    assert_eq!(d.line_of("cache"), Some(58));
}

#[test]
fn unknown_keys_are_errors_naming_the_line() {
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\nresources = {{ fule = \"50M\" }}\n"
    );
    let p = problem(&text);
    assert!(p.starts_with("10:15: unknown field `fule`"), "{p}");
    let p = problem(&format!("stat_dir = \".x\"\n{TENANT}"));
    assert!(p.starts_with("1:1: unknown field `stat_dir`"), "{p}");
    // The whole error names the file.
    let err = parse("[nodes]\n").unwrap_err();
    assert!(
        err.to_string().starts_with("/deploy/forgeone.toml:1:"),
        "{err}"
    );
}

#[test]
fn bad_units_are_errors_naming_the_line_and_workload() {
    for (field, value, expect) in [
        (
            "memory",
            "\"64 megs\"",
            "resources.memory: bad size `64 megs`",
        ),
        (
            "memory",
            "\"64\"",
            "resources.memory: size `64` needs a unit",
        ),
        ("fuel", "\"50Q\"", "resources.fuel: bad count `50Q`"),
        (
            "timeout",
            "5",
            "resources.timeout: 5 needs a unit, e.g. \"5s\"",
        ),
        (
            "timeout",
            "\"5 parsecs\"",
            "resources.timeout: bad duration `5 parsecs`",
        ),
        ("cpu", "\"half\"", "resources.cpu: bad cpu `half`"),
        // Refused, never saturated to 16 EiB.
        (
            "memory",
            "\"18446744073709551615TiB\"",
            "resources.memory: size `18446744073709551615TiB` is over the largest size, 16 EiB",
        ),
        (
            "storage",
            "\"16EiB\"",
            "resources.storage: size `16EiB` is over the largest size",
        ),
    ] {
        let text = format!(
            "{TENANT}\n[[workload]]\nname = \"web\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\n\n[workload.resources]\n{field} = {value}\n"
        );
        let p = problem(&text);
        assert!(p.starts_with("12:"), "{p}");
        assert!(p.contains(&format!("workload `web`: {expect}")), "{p}");
    }
}

#[test]
fn duplicate_workload_names_are_refused() {
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"api\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\n\n[[workload]]\nname = \"api\"\ncomponent = \"b.wasm\"\ntenant = \"acme\"\n"
    );
    assert_eq!(
        problem(&text),
        "12:8: workload `api`: duplicate workload name `api` (first declared at line 7)"
    );
}

#[test]
fn priority_above_the_tenant_cap_is_refused() {
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"greedy\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\npriority = \"critical\"\n"
    );
    assert_eq!(
        problem(&text),
        "10:12: workload `greedy`: priority `critical` is above tenant `acme`'s cap `high`"
    );
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"x\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\npriority = \"urgent\"\n"
    );
    assert!(problem(&text).contains("unknown priority `urgent`"));
}

#[test]
fn unknown_tenants_are_refused() {
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"x\"\ncomponent = \"a.wasm\"\ntenant = \"acne\"\n"
    );
    assert_eq!(
        problem(&text),
        "9:10: workload `x`: unknown tenant `acne` (declared tenants: acme)"
    );
}

#[test]
fn affinity_cycles_and_unknown_targets_are_refused() {
    let text = format!(
        r#"{TENANT}
[[workload]]
name = "a"
component = "a.wasm"
tenant = "acme"
constraints.affinity = ["b"]

[[workload]]
name = "b"
component = "b.wasm"
tenant = "acme"
labels = {{ app = "b" }}
constraints.affinity = ["c"]

[[workload]]
name = "c"
component = "c.wasm"
tenant = "acme"
constraints.affinity = ["app=b"]
"#
    );
    let p = problem(&text);
    assert!(p.contains("affinity cycle: b -> c -> b"), "{p}");
    assert!(p.starts_with("23:25: workload `c`"), "{p}");

    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\nconstraints.anti_affinity = [\"dbb\"]\n"
    );
    assert_eq!(
        problem(&text),
        "10:30: workload `a`: anti_affinity names workload `dbb`, which this deployment does not define"
    );
}

#[test]
fn other_bad_values_are_refused_precisely() {
    let cases = [
        (
            "constraints.labels = [\"disk in ssd\"]",
            "the values must be in parentheses",
        ),
        (
            "constraints.location = \"eu west\"",
            "location `eu west`: ` ` is not allowed",
        ),
        (
            "restart = \"sometimes\"",
            "unknown restart policy `sometimes`",
        ),
        (
            "capabilities.dirs = [\"data:/data\"]",
            "with `::` between the host and guest paths",
        ),
        (
            "capabilities.dirs = [\"data::/data:rw:ro\"]",
            "directory grant `data::/data:rw:ro`",
        ),
        (
            "capabilities.dirs = [\"data::data\"]",
            "directory grant `data::data`",
        ),
        (
            "capabilities.dirs = [\"data::/data/../etc\"]",
            "directory grant `data::/data/../etc`",
        ),
        (
            "constraints.preferred = [{ location = \"eu-*\", weight = 500 }]",
            "weight must be within 1..=100, got 500",
        ),
        (
            "constraints.preferred = [{ location = \"eu-*\", hardware = \"gpu\" }]",
            "a preference names exactly one of",
        ),
    ];
    for (line, expect) in cases {
        let text = format!(
            "{TENANT}\n[[workload]]\nname = \"w\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\n{line}\n"
        );
        let p = problem(&text);
        assert!(p.starts_with("10:"), "{p}");
        assert!(p.contains(expect), "{p}");
    }
}

#[test]
fn constraints_naming_labels_no_node_has_are_refused() {
    let text = format!(
        r#"{TENANT}
[[workload]]
name = "trainer"
component = "t.wasm"
tenant = "acme"
constraints.hardware = ["gpu", "tpu"]
constraints.labels = ["disk=ssd", "rack in (r1)"]
constraints.preferred = [{{ network = "infiniband" }}]
"#
    );
    let d = parse(&text).unwrap();
    let inventory = StaticInventory::new(deployment::read_nodes(data("nodes.toml")).unwrap());
    let err = d.plan(Arc::new(inventory), 4).unwrap_err();
    let PlanError::Deployment(err) = err else {
        panic!("{err}")
    };
    let msgs: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "10:32: workload `trainer`: hardware label `tpu` is on no node (known: avx2, gpu, x86_64)",
            "11:35: workload `trainer`: label `rack` in selector `rack in (r1)` is on no node (known: disk, tier)",
            "12:38: workload `trainer`: network label `infiniband` is on no node (known: private, public)",
        ]
    );
}

#[test]
fn nodes_files_are_strict_too() {
    let err = deployment::parse_nodes(
        "[[node]]\nid = \"a\"\nregion = \"r\"\nzone = \"z\"\ncapacity = { cpu = 4, memroy = \"1GiB\" }\n",
        Path::new("nodes.toml"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("nodes.toml:5:23: unknown field `memroy`"),
        "{err}"
    );
    let err = deployment::parse_nodes(
        "[[node]]\nid = \"a\"\nregion = \"r\"\nzone = \"z\"\ncapacity = { memory = \"lots\" }\n",
        Path::new("nodes.toml"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("capacity: bad size `lots`"),
        "{err}"
    );
}

#[test]
fn the_sample_plan_places_what_fits_and_explains_the_rest() {
    let d = Deployment::from_file(data("forgeone.toml")).unwrap();
    let inventory = StaticInventory::new(deployment::read_nodes(data("nodes.toml")).unwrap());
    let plan = d.plan(Arc::new(inventory), 4).unwrap();
    assert_eq!(plan.nodes, 8);
    assert!(!plan.all_placed());
    let get = |name: &str| plan.workloads.iter().find(|w| w.name == name).unwrap();
    let node = |name: &str| get(name).result.as_ref().unwrap().node_id.to_string();
    let zone = |name: &str| get(name).result.as_ref().unwrap().zone.clone();
    assert_ne!(zone("api-1"), zone("api-2"), "anti-affinity and spread");
    assert_eq!(node("cache"), node("api-1"), "affinity");
    assert!(
        node("db").starts_with("dub-b"),
        "disk=nvme, preferring eu-west-1b"
    );
    assert_eq!(node("inference"), "fra-gpu");
    assert!(node("report").starts_with("iad"));
    let explanation = |name: &str| match &get(name).result {
        Err(ScheduleError::Unschedulable { explanation, .. }) => explanation.clone(),
        other => panic!("{name}: {other:?}"),
    };
    // The trainer needs the GPU node's memory, which the critical
    // inference workload (placed first) holds.
    let t = explanation("trainer");
    assert_eq!(t.rejected_by("memory"), 1);
    assert_eq!(t.rejected_by("hardware"), 4);
    // The tenant may not run in the US.
    let us = explanation("us-mirror");
    assert_eq!(us.rejected_by("policy_location"), 3);
    assert_eq!(us.rejected_by("location"), 5);
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["workloads"][0]["name"], "api-1");
    assert_eq!(json["workloads"][0]["placed"], true);
    assert_eq!(json["workloads"][4]["placed"], false);
    assert!(
        json["workloads"][4]["error"]
            .as_str()
            .unwrap()
            .contains("unschedulable")
    );
}

#[test]
fn supervision_settings_parse_with_units_and_refuse_nonsense() {
    let d = parse(
        "boot = \"signatures\"\n[supervision]\nbackoff = \"100ms\"\nmax_backoff = \"2s\"\nhealthy_after = \"1m\"\nquarantine_after = 3\n",
    )
    .unwrap();
    let s = d.settings.supervision;
    assert_eq!(s.backoff, std::time::Duration::from_millis(100));
    assert_eq!(s.max_backoff, std::time::Duration::from_secs(2));
    assert_eq!(s.healthy_after, std::time::Duration::from_secs(60));
    assert_eq!(s.quarantine_after, 3);
    // Defaults are Kubernetes'.
    let d = parse("boot = \"signatures\"\n").unwrap();
    assert_eq!(
        d.settings.supervision.backoff,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(d.settings.supervision.quarantine_after, 5);

    assert!(
        problem("boot = \"signatures\"\n[supervision]\nbackoff = \"10 parsecs\"\n")
            .starts_with("3:11: supervision.backoff:")
    );
    assert_eq!(
        problem("boot = \"signatures\"\n[supervision]\nquarantine_after = 0\n"),
        "3:20: supervision.quarantine_after: must be at least 1"
    );
    assert!(
        problem("boot = \"signatures\"\n[supervision]\nbackoff = \"10s\"\nmax_backoff = \"1s\"\n")
            .contains("max_backoff (1s) is shorter than backoff (10s)")
    );
    assert!(problem("[supervision]\nbackof = \"1s\"\n").contains("backof"));
}

#[test]
fn worker_affinity_is_parsed() {
    let d = parse(&format!(
        "{TENANT}\n[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\nworker = 1\n"
    ))
    .unwrap();
    assert_eq!(d.workloads[0].worker, Some(1));
    assert!(problem(&format!(
        "{TENANT}\n[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\nworker = -1\n"
    ))
    .contains("invalid value: integer `-1`"));
}

#[test]
fn a_plan_refuses_a_worker_the_executor_will_not_have() {
    let d = parse(&format!(
        "{TENANT}\n[[workload]]\nname = \"pinned\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\n\
         worker = 1\n\n[[workload]]\nname = \"far\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\n\
         worker = 9999\n"
    ))
    .unwrap();
    let node = || StaticInventory::new(vec![d.node.node(4)]);
    let plan = d.plan(Arc::new(node()), 2).unwrap();
    assert!(plan.workloads[0].result.is_ok());
    let err = plan.workloads[1].result.as_ref().unwrap_err();
    assert!(
        matches!(
            err,
            ScheduleError::NoSuchWorker {
                worker: 9999,
                workers: 2
            }
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "no worker 9999: the executor has 2");
    assert!(!plan.all_placed());
    // With one worker, worker 1 does not exist either.
    let plan = d.plan(Arc::new(node()), 1).unwrap();
    assert!(plan.workloads.iter().all(|w| w.result.is_err()));
    assert_eq!(plan.metrics.decisions, 0, "refused work takes no placement");
}

#[test]
fn the_boot_mode_is_explicit() {
    let p = problem(&TENANT.replace("boot = \"signatures\"", ""));
    assert!(p.starts_with("1:1: missing `boot`"), "{p}");
    assert!(p.contains("boot = \"manifest\""), "{p}");
    let p = problem(&TENANT.replace("\"signatures\"", "\"sometimes\""));
    assert_eq!(
        p,
        "1:8: unknown boot mode `sometimes` (expected manifest or signatures)"
    );
    let d = parse(&TENANT.replace("\"signatures\"", "\"manifest\"")).unwrap();
    assert_eq!(d.settings.boot, BootMode::Manifest);
    assert_eq!(
        d.settings.boot_manifest,
        Path::new("/deploy/.forgeone/boot-manifest.json")
    );
    let d = parse(TENANT).unwrap();
    assert_eq!(d.settings.boot, BootMode::Signatures);
    assert_eq!(d.settings.boot_policy, BootPolicy::FailClosed);
    assert!(!d.settings.allow_recovery_downgrade, "off unless asked");
    let manifest_mode = TENANT.replace("\"signatures\"", "\"manifest\"");
    let d = parse(&format!(
        "allow_recovery_downgrade = true\nboot_policy = \"strict\"\n{manifest_mode}"
    ))
    .unwrap();
    assert!(d.settings.allow_recovery_downgrade);
    assert_eq!(
        d.settings.boot_policy,
        BootPolicy::FailClosed,
        "strict is fail-closed"
    );
    // Without a manifest there is no recovery to allow anything to.
    let p = problem(&format!("allow_recovery_downgrade = true\n{TENANT}"));
    assert!(
        p.starts_with("1:28: allow_recovery_downgrade has no effect"),
        "{p}"
    );
}

#[test]
fn one_component_file_is_verified_against_one_signature() {
    let two = |sig_a: &str, sig_b: &str| {
        format!(
            "{TENANT}\n[[workload]]\nname = \"a\"\ncomponent = \"app.wasm\"\n{sig_a}tenant = \"acme\"\n\n[[workload]]\nname = \"b\"\ncomponent = \"app.wasm\"\n{sig_b}tenant = \"acme\"\n"
        )
    };
    // The default and the same file named explicitly agree.
    parse(&two("", "signature = \"app.wasm.sig.json\"\n")).unwrap();
    let p = problem(&two("", "signature = \"other.sig.json\"\n"));
    assert!(
        p.contains(
            "workload `b`: /deploy/app.wasm is verified once, against /deploy/app.wasm.sig.json as workload `a` says"
        ),
        "{p}"
    );
}

/// Found by the `nodes` fuzz target: a node whose `used` memory is 8 EiB
/// or more overflowed the scheduler's free-capacity arithmetic (a panic in
/// debug builds; in release, a used memory near 16 EiB wrapped into free memory and a
/// full node took work).
#[test]
fn huge_used_capacity_neither_overflows_nor_frees_a_full_node() {
    let nodes = |used: &str| {
        deployment::parse_nodes(
            &format!(
                "[[node]]\nid = \"full\"\nregion = \"eu-west\"\nzone = \"eu-west-1a\"\n\
                 capacity = {{ cpu = 8, memory = \"16GiB\" }}\nused = {{ memory = \"{used}\" }}\n"
            ),
            Path::new("nodes.toml"),
        )
        .unwrap()
    };
    let d = parse(
        "boot = \"signatures\"\n[[tenant]]\nname = \"acme\"\n\
         [[workload]]\nname = \"api\"\ncomponent = \"api.wasm\"\ntenant = \"acme\"\n\
         resources = { memory = \"64MiB\", cpu = 1 }\n",
    )
    .unwrap();
    for used in ["8EiB", "9223372036854775807B", "18446744073709551615B"] {
        let plan = d
            .plan(Arc::new(StaticInventory::new(nodes(used))), 1)
            .unwrap();
        assert!(
            matches!(
                plan.workloads[0].result,
                Err(ScheduleError::Unschedulable { .. })
            ),
            "used {used}: {:?}",
            plan.workloads[0].result
        );
    }
    let plan = d
        .plan(Arc::new(StaticInventory::new(nodes("8GiB"))), 1)
        .unwrap();
    assert!(plan.all_placed(), "{:?}", plan.workloads[0].result);
}

#[test]
fn a_node_count_is_bounded() {
    let err = deployment::parse_nodes(
        "[[node]]\nid = \"a\"\ncount = 4000000000\nregion = \"r\"\nzone = \"z\"\ncapacity = { cpu = 1 }\n",
        Path::new("nodes.toml"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`count` must be within 1..=100000"),
        "{err}"
    );
}

#[test]
fn each_boot_mode_refuses_the_other_modes_keys() {
    // A manifest that signatures mode would never read.
    let p = problem(&format!("boot_manifest = \"m.json\"\n{TENANT}"));
    assert!(p.starts_with("1:17: boot_manifest is set but"), "{p}");
    // A signature that manifest mode would never read.
    let text = format!(
        "{}\n[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\nsignature = \"a.sig.json\"\ntenant = \"acme\"\n",
        TENANT.replace("\"signatures\"", "\"manifest\"")
    );
    let p = problem(&text);
    assert!(
        p.starts_with("9:13: workload `a`: `signature` is read only with"),
        "{p}"
    );
}

#[test]
fn network_is_granted_by_the_tenant_not_by_the_workload() {
    let workload = "\n[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\ncapabilities = { network = true }\n";
    let p = problem(&format!("{TENANT}{workload}"));
    assert!(
        p.starts_with("10:28: workload `a`: network access is granted by tenant policy"),
        "{p}"
    );
    let open = format!("{TENANT}network = true\n{workload}");
    let d = parse(&open).unwrap();
    assert!(d.tenant("acme").unwrap().network);
    assert!(d.workloads[0].capabilities.network);
    assert!(d.policies().get("acme").unwrap().network);
}

#[test]
fn open_files_is_a_workload_resource_that_reaches_the_container() {
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"web\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\nresources = {{ open_files = 256 }}\n\n[[workload]]\nname = \"db\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\n"
    );
    let d = parse(&text).unwrap();
    let component = || forgeone::boot::VerifiedComponent::unsigned("w", b"\0asm".to_vec());
    let web = d.workload("web").unwrap();
    assert_eq!(web.resources.open_files, Some(256));
    assert_eq!(
        web.container(component()).current_limits().max_open_files,
        256
    );
    // Absent: the runtime's default.
    let db = d.workload("db").unwrap();
    assert_eq!(db.resources.open_files, None);
    assert_eq!(
        db.container(component()).current_limits().max_open_files,
        1024
    );

    for (value, expect) in [
        ("0", "resources.open_files: 0 is not between 1 and 1000000"),
        (
            "\"2M\"",
            "resources.open_files: 2000000 is not between 1 and 1000000",
        ),
        ("\"many\"", "resources.open_files: bad count `many`"),
    ] {
        let text = format!(
            "{TENANT}\n[[workload]]\nname = \"web\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\n\n[workload.resources]\nopen_files = {value}\n"
        );
        let p = problem(&text);
        assert!(p.starts_with("12:"), "{p}");
        assert!(p.contains(&format!("workload `web`: {expect}")), "{p}");
    }
}

#[test]
fn names_with_control_characters_are_refused_and_never_echoed_raw() {
    let cases = [
        // A tenant named with an escape sequence and a newline.
        (
            "boot = \"signatures\"\n[[tenant]]\nname = \"acme\\u001b[2J\\nroot\"\n",
            "3:8: bad tenant name: `acme\\x1b[2J\\nroot` contains the control character U+001B; names are shown on terminals and in logs",
        ),
        (
            "boot = \"signatures\"\n[[tenant]]\nname = \"\"\n",
            "3:8: bad tenant name: it is empty",
        ),
        // A principal with a carriage return, another with a line separator.
        (
            &format!(
                "{TENANT}\n[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\nprincipal = \"svc\\rroot\"\n"
            ),
            "10:13: workload `a`: bad principal: `svc\\rroot` contains the control character U+000D; names are shown on terminals and in logs",
        ),
    ];
    for (text, expect) in cases {
        assert_eq!(problem(text), expect);
    }
    let p = problem(&format!(
        "{TENANT}\n[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\nprincipal = \"svc\\u2028root\"\n"
    ));
    assert!(
        p.starts_with("10:13: workload `a`: bad principal: `svc")
            && p.ends_with("root` contains the control character U+2028; names are shown on terminals and in logs"),
        "{p}"
    );
    // A workload name, and the tenant it names: every problem is escaped,
    // the workload it concerns too.
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"w\\u001b]0;pwned\\u0007\"\ncomponent = \"a.wasm\"\ntenant = \"ac\\nme\"\n"
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        !err.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in: {err:?}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.contains("workload `w\\x1b]0;pwned\\x07`: bad workload name"),
        "{err}"
    );
    assert!(err.contains("unknown tenant `ac\\nme`"), "{err}");
}

#[test]
fn file_io_reaches_the_container_and_a_bad_mode_is_refused_where_written() {
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"nfs\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\nfile_io = \"pool\"\n\n[[workload]]\nname = \"local\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\nfile_io = \"on-thread\"\n\n[[workload]]\nname = \"plain\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\n"
    );
    let d = parse(&text).unwrap();
    let component = || forgeone::boot::VerifiedComponent::unsigned("w", b"\0asm".to_vec());
    for (name, mode) in [
        ("nfs", FileIo::BlockingPool),
        ("local", FileIo::OnThread),
        ("plain", FileIo::OnThread),
    ] {
        let w = d.workload(name).unwrap();
        assert_eq!(w.file_io, mode, "{name}");
        assert_eq!(w.container(component()).current_file_io(), mode, "{name}");
    }
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"nfs\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\nfile_io = \"blocking\"\n"
    );
    let p = problem(&text);
    assert!(
        p.starts_with(
            "10:11: workload `nfs`: unknown file I/O mode `blocking`: expected on-thread | pool"
        ),
        "{p}"
    );
}

#[test]
fn a_stdin_file_is_a_grant_that_reaches_the_container() {
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"md\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\ncapabilities = {{ stdin = \"in/notes.md\" }}\n\n[[workload]]\nname = \"quiet\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\n"
    );
    let d = parse(&text).unwrap();
    let component = || forgeone::boot::VerifiedComponent::unsigned("w", b"\0asm".to_vec());
    // Resolved against the deployment file's directory.
    let md = d.workload("md").unwrap();
    let file = PathBuf::from("/deploy/in/notes.md");
    assert_eq!(md.capabilities.stdin, Some(file.clone()));
    assert_eq!(
        md.container(component()).grants().stdin,
        forgeone::runtime::StdinGrant::File(file)
    );
    // Absent: nothing.
    let quiet = d.workload("quiet").unwrap();
    assert_eq!(quiet.capabilities.stdin, None);
    assert_eq!(
        quiet.container(component()).grants().stdin,
        forgeone::runtime::StdinGrant::None
    );
    let text = format!(
        "{TENANT}\n[[workload]]\nname = \"md\"\ncomponent = \"w.wasm\"\ntenant = \"acme\"\ncapabilities.stdin = \"\"\n"
    );
    let p = problem(&text);
    assert!(
        p.starts_with("10:") && p.contains("workload `md`: `stdin` is empty"),
        "{p}"
    );
}

#[test]
fn replicas_default_to_one_and_must_be_within_bounds() {
    let one =
        format!("{TENANT}[[workload]]\nname = \"a\"\ncomponent = \"a.wasm\"\ntenant = \"acme\"\n");
    assert_eq!(parse(&one).unwrap().workloads[0].replicas, 1);
    let three = format!("{one}replicas = 3\n");
    assert_eq!(parse(&three).unwrap().workloads[0].replicas, 3);
    let zero = format!("{one}replicas = 0\n");
    assert!(
        problem(&zero).contains("`replicas` must be within 1..=1000, got 0"),
        "{}",
        problem(&zero)
    );
}
