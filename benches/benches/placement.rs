//! P5: placement decisions per second, 10,000 workloads with mixed
//! constraints onto 1,000 nodes (the Kubernetes scheduler's own benchmark
//! reaches 500-1,000 pods/s).
//!
//! Run with `cargo bench -p forgeone-benches --bench placement`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use forgeone::Priority;
use forgeone::scheduler::{
    Capacity, Constraint, Node, ResourceRequirements, SchedulerContext, StaticInventory, Workload,
};
use forgeone::{IdentityContext, PolicySet, TenantPolicy, TrustLevel, TrustVector};

const NODES: usize = 1_000;
const WORKLOADS: usize = 10_000;
const REGIONS: [&str; 5] = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"];

/// 1,000 nodes in 5 regions x 4 zones with hardware, network and custom
/// labels, some already half busy.
fn nodes() -> Vec<Node> {
    (0..NODES)
        .map(|i| {
            let region = REGIONS[i % 5];
            let zone = format!("{region}-1{}", ["a", "b", "c", "d"][(i / 5) % 4]);
            let mut n = Node::new(
                format!("node-{i:04}"),
                region,
                zone,
                Capacity {
                    cpu_millis: 32_000,
                    memory: 128 << 30,
                    storage: 1 << 40,
                    containers: 110,
                },
            );
            n.hardware("x86_64");
            if i % 2 == 0 {
                n.hardware("avx2");
            }
            if i % 10 == 3 {
                n.hardware("gpu");
            }
            n.network(if i % 3 == 0 { "private" } else { "public" });
            n.label("disk", ["ssd", "nvme", "hdd"][i % 3]);
            n.label("tier", if i % 5 == 4 { "spot" } else { "standard" });
            n.label("rack", format!("r{}", i % 20));
            n.trust(if i % 4 == 0 {
                TrustLevel::High
            } else {
                TrustLevel::Medium
            });
            if i % 7 == 0 {
                n.used(Capacity {
                    cpu_millis: 16_000,
                    memory: 64 << 30,
                    storage: 0,
                    containers: 50,
                });
            }
            n
        })
        .collect()
}

/// 10,000 workloads of 4 tenants with a mix of every constraint type:
/// locations (wildcards, zones), hardware, network, label selectors with
/// all operators, anti-affinity between replicas, affinity to a service,
/// and preferences.
fn workloads() -> Vec<Workload> {
    let tenants = ["acme", "globex", "initech", "umbrella"];
    (0..WORKLOADS)
        .map(|i| {
            let tenant = tenants[i % 4];
            let identity = IdentityContext::new(
                tenant,
                "bench",
                TrustVector::new(
                    [TrustLevel::Low, TrustLevel::Medium, TrustLevel::High][i % 3],
                    1,
                ),
            );
            let priority = Priority::ALL[i % 5];
            let mut w = Workload::new(format!("w{i}"), priority, identity);
            w.requirements(ResourceRequirements::new(
                [100, 250, 500, 1000][i % 4],
                [64 << 20, 256 << 20, 1 << 30][i % 3],
            ));
            match i % 6 {
                0 => w.constraint(Constraint::location("eu-*")),
                1 => w.constraint(Constraint::location("us-east-1b,us-west-1a")),
                2 => w.constraint(Constraint::location("*-1c")),
                _ => &mut w,
            };
            match i % 8 {
                0 => w.constraint(Constraint::label("disk in (ssd, nvme)")),
                1 => w.constraint(Constraint::label("tier notin (spot)")),
                2 => w.constraint(Constraint::label("!gpu-reserved")),
                3 => w.constraint(Constraint::network("public")),
                4 => w.constraint(Constraint::hardware("avx2")),
                _ => &mut w,
            };
            if i % 20 == 7 {
                w.constraint(Constraint::hardware("gpu"));
            }
            // Replica groups of 5 that keep apart.
            if i % 5 == 1 {
                let app = format!("svc{}", i / 25);
                w.label("app", app.clone())
                    .constraint(Constraint::anti_affinity(format!("app={app}")));
            }
            // Sidecars next to an earlier workload.
            if i % 50 == 49 {
                w.constraint(Constraint::affinity(format!("w{}", i - 1)));
            }
            if i % 4 == 2 {
                w.constraint(Constraint::location("eu-west-1a").prefer(30));
                w.constraint(Constraint::label("rack=r3").prefer(10));
            }
            w
        })
        .collect()
}

fn policies() -> PolicySet {
    let mut p = PolicySet::permissive();
    p.tenant(
        "umbrella",
        TenantPolicy::new()
            .max_priority(Priority::Critical)
            .allow_location("eu-*")
            .allow_location("us-*")
            .build(),
    );
    p
}

fn context(nodes: &[Node]) -> SchedulerContext {
    SchedulerContext::new(Arc::new(StaticInventory::new(nodes.to_vec())), policies()).unwrap()
}

fn bench(c: &mut Criterion) {
    let nodes = nodes();
    let workloads = workloads();

    // One full run outside the timing, to report the outcome and the
    // scheduler's own measure of its decision rate.
    let mut ctx = context(&nodes);
    let mut placed = 0;
    for w in workloads.iter().cloned() {
        placed += usize::from(ctx.schedule_workload(w).is_ok());
    }
    let m = ctx.metrics();
    eprintln!(
        "P5: {placed} of {WORKLOADS} placed on {NODES} nodes; {} decisions, {} nodes scored; \
         scheduler-measured {:.0} decisions/s",
        m.decisions,
        m.nodes_scored,
        m.decisions_per_second()
    );

    let mut group = c.benchmark_group("placement");
    group.sample_size(10);
    group.throughput(Throughput::Elements(WORKLOADS as u64));
    group.bench_function("schedule_workload_10k_on_1k_nodes", |b| {
        b.iter_batched(
            || (context(&nodes), workloads.clone()),
            |(mut ctx, ws)| {
                for w in ws {
                    black_box(ctx.schedule_workload(w).is_ok());
                }
                ctx
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("queued_10k_on_1k_nodes", |b| {
        b.iter_batched(
            || {
                let mut ctx = context(&nodes);
                for w in workloads.iter().cloned() {
                    ctx.submit(w);
                }
                ctx
            },
            |mut ctx| {
                black_box(ctx.schedule_pending().unwrap().len());
                ctx
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
