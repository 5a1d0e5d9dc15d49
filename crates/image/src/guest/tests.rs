use super::*;
use std::process::Stdio;

fn inputs_archive() -> Archive {
    let modules = vec![
        GuestModule {
            path: "kernel/drivers/virtio/virtio_ring.ko".into(),
            data: b"ring".to_vec(),
            deps: vec![],
        },
        GuestModule {
            path: "kernel/drivers/virtio/virtio.ko".into(),
            data: b"virtio".to_vec(),
            deps: vec!["kernel/drivers/virtio/virtio_ring.ko".into()],
        },
    ];
    let applets = vec![
        "bin/sh".to_string(),
        "sbin/acpid".into(),
        "usr/bin/[".into(),
        "bin/busybox".into(),
    ];
    assemble(&GuestInputs {
        busybox: b"\x7fELF",
        applets: &applets,
        kernel_version: "6.1.0-1-cloud-amd64",
        modules: &modules,
    })
}

fn listing(a: &Archive) -> String {
    let mut child = Command::new("cpio")
        .args(["-tv", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cpio installed (apt-get install -y cpio)");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&a.finish()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn archive_has_init_busybox_links_and_modules() {
    let l = listing(&inputs_archive());
    let has = |suffix: &str| l.lines().any(|line| line.ends_with(suffix));
    assert!(has(" init"), "{l}");
    assert!(has(" bin/busybox"));
    assert!(has(" bin/sh -> /bin/busybox"));
    assert!(has(" sbin/acpid -> /bin/busybox"));
    assert!(has(" usr/bin/[ -> /bin/busybox"));
    assert!(
        !has("bin/busybox -> /bin/busybox"),
        "busybox must not link to itself"
    );
    assert!(has(
        " lib/modules/6.1.0-1-cloud-amd64/kernel/drivers/virtio/virtio.ko"
    ));
    assert!(has(" etc/acpi/PWRF/00000080"));
    assert!(l
        .lines()
        .any(|x| x.starts_with("crw-------") && x.ends_with(" dev/console")));
    assert!(l
        .lines()
        .any(|x| x.starts_with("-rwxr-xr-x") && x.ends_with(" init")));
}

#[test]
fn module_load_list_and_modules_dep_are_consistent() {
    let raw = inputs_archive().finish();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains(
        "/lib/modules/6.1.0-1-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko\n/lib/modules/6.1.0-1-cloud-amd64/kernel/drivers/virtio/virtio.ko\n"
    ));
    assert!(
        text.contains("kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n")
    );
}

#[test]
fn init_script_is_valid_shell() {
    // `sh -n` parses without running; Debian's sh (dash) is stricter than ash.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("init");
    std::fs::write(&path, INIT_SCRIPT).unwrap();
    let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(INIT_SCRIPT.starts_with("#!/bin/sh\n"));
    assert!(INIT_SCRIPT.contains("vireo guest ready"));
}

#[test]
fn compressed_module_paths_become_plain_ko() {
    assert_eq!(ko_path("kernel/a/b.ko.xz"), "kernel/a/b.ko");
    assert_eq!(ko_path("kernel/a/b.ko"), "kernel/a/b.ko");
}
