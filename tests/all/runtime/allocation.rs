//! The instance allocator: a pool when it fits, on demand (and why) when
//! it does not, and containers run either way.

use forgeone::runtime::Allocation;

use super::*;

/// A harness whose engine asks for a pool of `instances` instances with
/// memories of up to `max_memory` bytes, falling back to on demand.
fn sized(instances: u32, max_memory: u64) -> Harness {
    Harness::new(|c| {
        let mut engine = EngineConfig::new();
        engine.pooling_or_on_demand(instances, 2, max_memory);
        c.engine(engine);
    })
}

async fn hello_runs(h: &Harness) {
    let id = h
        .runtime
        .launch_container(ContainerConfig::new(component(guests::HELLO)), identity())
        .unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_fits_is_used() {
    let h = sized(8, 64 << 20);
    assert_eq!(
        h.runtime.allocation(),
        &Allocation::Pooling {
            instances: 8,
            memories: 24,
            max_memory: 64 << 20
        }
    );
    hello_runs(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_too_big_for_a_pool_runs_on_demand_and_says_why() {
    // 10,000 instances of 3 slots of 4 GiB each: 117 TiB of address space.
    let h = sized(10_000, 64 << 20);
    match h.runtime.allocation() {
        Allocation::OnDemand {
            fallback: Some(why),
        } => {
            assert!(
                why.contains("10000 instances need 30000 memory slots")
                    && why.contains("over the pool's budget of 32.0 TiB"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        h.runtime
            .allocation()
            .to_string()
            .starts_with("on demand, not pooling: "),
        "{}",
        h.runtime.allocation()
    );
    hello_runs(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_over_a_slot_runs_on_demand() {
    let h = sized(4, 8 << 30);
    match h.runtime.allocation() {
        Allocation::OnDemand {
            fallback: Some(why),
        } => {
            assert!(
                why.contains("a memory limit of 8.0 GiB is over the pool's 4.0 GiB slots"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    hello_runs(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pool_asked_for_allocation_is_on_demand() {
    let h = Harness::new(|_| {});
    assert_eq!(
        h.runtime.allocation(),
        &Allocation::OnDemand { fallback: None }
    );
}
