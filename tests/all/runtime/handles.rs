//! What a guest may hold and plant on the host through its preopens: a
//! bounded number of handles, and symbolic links that stay inside.

use super::*;

/// `data/inside.txt` and `outside.txt` next to `data`.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/inside.txt"), "hello from inside\n").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "secret outside\n").unwrap();
    dir
}

/// Runs `fs-probe /data ARGS..` with `data` granted (read-write when `rw`).
async fn fs_probe(
    h: &Harness,
    dir: &Path,
    rw: bool,
    args: &[&str],
    configure: impl FnOnce(&mut ContainerConfig),
) -> (Outcome, Vec<String>) {
    let (sink, lines) = collector();
    let mut config = ContainerConfig::new(component(guests::FS_PROBE));
    config
        .grant_dir(DirGrant::new(dir.join("data"), "/data", !rw))
        .arg("/data")
        .output(sink);
    for arg in args {
        config.arg(*arg);
    }
    configure(&mut config);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    (outcome, texts(&lines))
}

/// The number in the guest's `opened N` line.
fn opened(out: &[String]) -> usize {
    out.iter()
        .find_map(|l| l.strip_prefix("opened "))
        .unwrap_or_else(|| panic!("no `opened` line: {out:#?}"))
        .parse()
        .unwrap()
}

fn run_hello(h: &Harness) -> impl std::future::Future<Output = Outcome> + use<> {
    let rt = h.runtime.clone();
    async move {
        let id = rt
            .launch_container(ContainerConfig::new(component(guests::HELLO)), identity())
            .unwrap();
        rt.wait(id).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_opening_files_in_a_loop_gets_errors_at_its_limit_and_the_others_run_on() {
    let h = Harness::new(|_| {});
    let dir = data_dir();
    // A neighbour in the same runtime, before, during and after.
    assert!(run_hello(&h).await.is_success());
    let neighbour = tokio::spawn(run_hello(&h));
    let (outcome, out) = fs_probe(&h, dir.path(), false, &["open-many", "5000"], |c| {
        c.max_open_files(64);
    })
    .await;
    // The guest saw an error (and handled it): no trap, it exits 0.
    assert!(outcome.is_success(), "{outcome:?}");
    let n = opened(&out);
    assert!(
        (32..64).contains(&n),
        "opened {n} with a limit of 64: {out:#?}"
    );
    let stopped = out
        .iter()
        .find(|l| l.starts_with("stopped "))
        .unwrap_or_else(|| panic!("{out:#?}"));
    assert!(stopped.starts_with("stopped QuotaExceeded"), "{stopped}");
    // Its handles came back when it closed them.
    assert!(out.iter().any(|l| l == "reopened"), "{out:#?}");
    assert!(neighbour.await.unwrap().is_success());
    assert!(run_hello(&h).await.is_success());

    // The default limit: about 1,024 (the 19,986 of the report are gone).
    let (outcome, out) = fs_probe(&h, dir.path(), false, &["open-many", "20000"], |_| {}).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let n = opened(&out);
    assert!((1000..1024).contains(&n), "opened {n} by default: {out:#?}");
    assert!(run_hello(&h).await.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_fails_at_its_handle_limit_is_reported_as_that_limit() {
    let h = Harness::new(|_| {});
    let dir = data_dir();
    // It panics at the first refused open (a trap): the failure names the
    // limit rather than an anonymous trap.
    let (outcome, _) = fs_probe(&h, dir.path(), false, &["open-many-strict", "5000"], |c| {
        c.max_open_files(32);
    })
    .await;
    let f = failure(&outcome.end);
    let Failure::OpenFilesLimit { limit, refused, .. } = f else {
        panic!("expected the open-files limit, got {f:?}");
    };
    assert_eq!(*limit, 32);
    assert!(*refused >= 1);
    let text = f.to_string();
    assert!(
        text.starts_with("open-files limit hit: ") && text.contains("limit 32 open at once"),
        "{text}"
    );
    assert_eq!(f.kind(), "open-files-limit");
    let failed = h.records_of("container.failed");
    assert_eq!(failed[0]["details"]["reason"], "open-files-limit");
    assert_eq!(failed[0]["details"]["limit"], 32);
    assert!(run_hello(&h).await.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_plant_a_symlink_that_leaves_its_preopen() {
    let h = Harness::new(|_| {});
    let dir = data_dir();
    let data = dir.path().join("data");
    let (outcome, out) = fs_probe(&h, dir.path(), true, &["symlinks"], |_| {}).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let has = |prefix: &str| out.iter().any(|l| l.starts_with(prefix));
    assert!(has("denied symlink abs-link -> /etc/passwd: "), "{out:#?}");
    assert!(has("denied symlink up-link -> ../..: "), "{out:#?}");
    assert!(
        has("denied symlink out-link -> ../outside.txt: "),
        "{out:#?}"
    );
    assert!(has("ok symlink in-link -> inside.txt"), "{out:#?}");
    assert!(has("ok read in-link: hello from inside"), "{out:#?}");
    // Nothing leaving the preopen was planted on the host.
    for refused in ["abs-link", "up-link", "out-link"] {
        assert!(
            std::fs::symlink_metadata(data.join(refused)).is_err(),
            "{refused} exists"
        );
    }
    assert_eq!(
        std::fs::read_link(data.join("in-link")).unwrap(),
        Path::new("inside.txt")
    );
}
