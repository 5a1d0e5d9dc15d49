use super::*;
use std::io::Write as _;

/// An excerpt in real depmod output style (full transitive lists).
const DEPMOD_STYLE: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/net/vmw_vsock/vsock.ko
this line is garbage
";

fn pos(order: &[String], name: &str) -> usize {
    order
        .iter()
        .position(|p| module_name(p) == name)
        .unwrap_or_else(|| panic!("{name} not in {order:?}"))
}

#[test]
fn module_names_fold_dashes_and_suffixes() {
    assert_eq!(
        module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
        "virtio_rng"
    );
    assert_eq!(module_name("a/b/foo.ko.xz"), "foo");
    assert_eq!(module_name("vmw-vsock"), "vmw_vsock");
}

#[test]
fn resolves_dependencies_before_dependents() {
    let md = ModulesDep::parse(DEPMOD_STYLE);
    assert_eq!(md.len(), 12, "garbage line skipped");
    // Only leaf-ish modules are asked for; their deps must be pulled in.
    let r = md.resolve(&[
        "virtio_net",
        "virtio-rng",
        "vmw_vsock_virtio_transport",
        "virtio_pci",
        "nonexistent",
    ]);
    assert_eq!(r.missing, vec!["nonexistent".to_string()]);
    let o = &r.load_order;
    assert_eq!(o.len(), 12);
    let mut sorted = o.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), o.len(), "no duplicates");
    for (before, after) in [
        ("virtio_ring", "virtio"),
        ("virtio", "virtio_net"),
        ("failover", "net_failover"),
        ("net_failover", "virtio_net"),
        ("virtio", "virtio_rng"),
        ("vsock", "vmw_vsock_virtio_transport_common"),
        (
            "vmw_vsock_virtio_transport_common",
            "vmw_vsock_virtio_transport",
        ),
        ("virtio_pci_modern_dev", "virtio_pci"),
        ("virtio_pci_legacy_dev", "virtio_pci"),
    ] {
        assert!(
            pos(o, before) < pos(o, after),
            "{before} must load before {after}: {o:?}"
        );
    }
    // Wanted order is kept where possible: the last root comes last.
    assert_eq!(module_name(&o[11]), "virtio_pci");
}

#[test]
fn direct_only_lists_resolve_transitively() {
    // Our own generator may list only direct deps; the resolver must close them.
    let md = ModulesDep::parse("c.ko: b.ko\nb.ko: a.ko\na.ko:\n");
    let r = md.resolve(&["c"]);
    assert_eq!(r.load_order, ["a.ko", "b.ko", "c.ko"]);
    // Rendering writes the transitive list, nearest first, like depmod.
    assert_eq!(md.render(), "a.ko:\nb.ko: a.ko\nc.ko: b.ko a.ko\n");
    assert_eq!(ModulesDep::parse(&md.render()).resolve(&["c"]), r);
}

#[test]
fn cycles_do_not_hang() {
    let md = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko\n");
    let r = md.resolve(&["a"]);
    assert_eq!(r.load_order.len(), 2);
}

#[test]
fn repeated_requests_appear_once() {
    let md = ModulesDep::parse(DEPMOD_STYLE);
    let r = md.resolve(&["virtio", "virtio_ring", "virtio"]);
    assert_eq!(
        r.load_order,
        [
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/virtio/virtio.ko"
        ]
    );
}

/// Builds a minimal ELF64 LE relocatable with a `.modinfo` section.
fn fake_module(modinfo: &str) -> Vec<u8> {
    let shstrtab = b"\0.shstrtab\0.modinfo\0";
    let mut elf = vec![0u8; 64];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    let shstr_off = elf.len() as u64;
    elf.extend_from_slice(shstrtab);
    let modinfo_off = elf.len() as u64;
    elf.extend_from_slice(modinfo.as_bytes());
    while !elf.len().is_multiple_of(8) {
        elf.push(0);
    }
    let shoff = elf.len() as u64;
    let mut section = |name: u32, off: u64, size: u64| {
        let mut sh = vec![0u8; 64];
        sh[0..4].copy_from_slice(&name.to_le_bytes());
        sh[24..32].copy_from_slice(&off.to_le_bytes());
        sh[32..40].copy_from_slice(&size.to_le_bytes());
        elf.extend_from_slice(&sh);
    };
    section(0, 0, 0);
    section(1, shstr_off, shstrtab.len() as u64);
    section(11, modinfo_off, modinfo.len() as u64);
    elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
    elf
}

#[test]
fn reads_modinfo_fields() {
    let elf = fake_module("license=GPL\0depends=virtio,virtio_ring\0name=virtio_net\0");
    let f = modinfo_fields(&elf).unwrap();
    assert!(f.contains(&("depends".into(), "virtio,virtio_ring".into())));
    assert!(f.contains(&("name".into(), "virtio_net".into())));
}

#[test]
fn rejects_truncated_or_foreign_files() {
    let elf = fake_module("name=x\0");
    assert!(modinfo_fields(&elf[..elf.len() - 40]).is_err());
    assert!(modinfo_fields(b"#!/bin/sh").is_err());
    assert!(modinfo_fields(&[]).is_err());
}

#[test]
fn builds_table_from_module_tree_including_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("kernel/a")).unwrap();
    std::fs::write(
        root.join("kernel/a/base.ko"),
        fake_module("depends=\0name=base\0"),
    )
    .unwrap();
    std::fs::write(
        root.join("kernel/a/mid-dash.ko"),
        fake_module("depends=base\0name=mid_dash\0"),
    )
    .unwrap();
    // A dependency on a built-in (absent) module is dropped, not fatal.
    let top = fake_module("depends=mid_dash,builtin_thing\0name=top\0");
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&top).unwrap();
    std::fs::write(root.join("kernel/top.ko.xz"), xz.finish().unwrap()).unwrap();
    std::fs::write(root.join("modules.order"), "not a module").unwrap();

    let md = ModulesDep::from_modinfo(root).unwrap();
    assert_eq!(md.len(), 3);
    assert_eq!(read_module(&root.join("kernel/top.ko.xz")).unwrap(), top);
    let r = md.resolve(&["top"]);
    assert_eq!(
        r.load_order,
        [
            "kernel/a/base.ko",
            "kernel/a/mid-dash.ko",
            "kernel/top.ko.xz"
        ]
    );
}
