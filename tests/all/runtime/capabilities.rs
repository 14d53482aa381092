//! Capabilities: only the granted directories, environment, arguments
//! and network.

use super::*;

/// A directory with `data/inside.txt`, `outside.txt` next to `data`, and
/// `data/escape-link` pointing at it.
fn probe_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("inside.txt"), "hello from inside\n").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "secret outside\n").unwrap();
    std::os::unix::fs::symlink("../outside.txt", data.join("escape-link")).unwrap();
    dir
}

async fn run_fs_probe(
    h: &Harness,
    dir: &Path,
    read_only: bool,
    configure: impl FnOnce(&mut ContainerConfig),
) -> Vec<String> {
    let grant = DirGrant::new(dir.join("data"), "/data", read_only);
    run_fs_probe_with(h, grant, configure).await
}

/// Runs fs-probe on `/data` with `grant` (which should grant `/data`).
async fn run_fs_probe_with(
    h: &Harness,
    grant: DirGrant,
    configure: impl FnOnce(&mut ContainerConfig),
) -> Vec<String> {
    let (sink, lines) = collector();
    let mut config = ContainerConfig::new(component(guests::FS_PROBE));
    config.grant_dir(grant).arg("/data").output(sink);
    configure(&mut config);
    let id = h.runtime.launch_container(config, identity()).unwrap();
    let outcome = h.runtime.wait(id).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    texts(&lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_probe_cannot_escape_its_preopen() {
    let h = Harness::new(|_| {});
    let dir = probe_dir();
    let out = run_fs_probe(&h, dir.path(), true, |_| {}).await;
    let has = |prefix: &str| out.iter().any(|l| l.starts_with(prefix));
    assert!(has("ok read inside.txt: hello from inside"), "{out:#?}");
    assert!(has("denied read ../outside.txt"), "{out:#?}");
    assert!(has("denied read /etc/passwd"), "{out:#?}");
    assert!(has("denied read escape-link"), "{out:#?}");
    assert!(has("denied write written.txt"), "{out:#?}");
    assert!(has("denied list .."), "{out:#?}");
    assert!(!out.iter().any(|l| l.contains("secret outside")));
    assert!(!dir.path().join("data/written.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_write_grant_allows_writes_inside_only() {
    let h = Harness::new(|_| {});
    let dir = probe_dir();
    let out = run_fs_probe(&h, dir.path(), false, |_| {}).await;
    assert!(out.iter().any(|l| l == "ok write written.txt"), "{out:#?}");
    assert!(out.iter().any(|l| l.starts_with("denied read escape-link")));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/written.txt")).unwrap(),
        "written by fs-probe\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_parsed_without_rw_is_read_only_and_with_rw_is_writable() {
    let h = Harness::new(|_| {});
    let dir = probe_dir();
    let data = dir.path().join("data");
    let written = data.join("written.txt");

    let grant: DirGrant = format!("{}::/data", data.display()).parse().unwrap();
    assert!(grant.read_only);
    let out = run_fs_probe_with(&h, grant, |_| {}).await;
    assert!(
        out.iter().any(|l| l.starts_with("ok read inside.txt")),
        "{out:#?}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("denied write written.txt")),
        "{out:#?}"
    );
    assert!(!written.exists());

    let grant = DirGrant::parse(&format!("{}::/data:rw", data.display())).unwrap();
    let out = run_fs_probe_with(&h, grant, |_| {}).await;
    assert!(out.iter().any(|l| l == "ok write written.txt"), "{out:#?}");
    assert!(written.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_args_are_only_what_was_granted() {
    // SAFETY: nothing else in this test binary reads this variable.
    unsafe { std::env::set_var("FORGEONE_HOST_SECRET", "do-not-leak") };
    let h = Harness::new(|_| {});
    let dir = probe_dir();
    let out = run_fs_probe(&h, dir.path(), true, |c| {
        c.env("GREETING", "hi").arg("extra");
    })
    .await;
    let env: Vec<&String> = out.iter().filter(|l| l.starts_with("env ")).collect();
    assert_eq!(env, ["env GREETING=hi"]);
    let args: Vec<&String> = out.iter().filter(|l| l.starts_with("arg ")).collect();
    assert_eq!(args, ["arg fs-probe", "arg /data", "arg extra"]);
    // No directory but the granted one: `/etc/passwd` is not reachable.
    assert!(out.iter().any(|l| l.starts_with("denied read /etc/passwd")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_needs_the_policy() {
    let h = Harness::new(|_| {});
    let mut config = ContainerConfig::new(component(guests::HELLO));
    config.network(true);
    let err = h.runtime.launch_container(config, identity()).unwrap_err();
    assert!(matches!(err, RuntimeError::NetworkRefused { .. }), "{err}");
    assert_eq!(h.records_of("policy.network_refused").len(), 1);
}
