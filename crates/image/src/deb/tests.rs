use super::*;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;

/// Builds a tiny .deb: ar(debian-binary, control.tar.xz, data.tar.<comp>).
fn make_deb(compression: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("./bin/busybox", 0o755, b"\x7fELF fake");
    add("./usr/share/doc/x/copyright", 0o644, b"GPL");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_cksum();
    tar.append_link(&mut h, "./bin/sh", "busybox").unwrap();
    let data_tar = tar.into_inner().unwrap();

    let data = match compression {
        "xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&data_tar).unwrap();
            e.finish().unwrap()
        }
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&data_tar).unwrap();
            e.finish().unwrap()
        }
        _ => data_tar,
    };
    let member = if compression.is_empty() {
        "data.tar".to_string()
    } else {
        format!("data.tar.{compression}")
    };

    let mut ar = ar::Builder::new(Vec::new());
    for (name, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.xz", vec![0; 8]),
        (member.as_str(), data),
    ] {
        let header = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
        ar.append(&header, body.as_slice()).unwrap();
    }
    ar.into_inner().unwrap()
}

#[test]
fn extracts_xz_gz_and_plain_data_tarballs() {
    for comp in ["xz", "gz", ""] {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("pkg_1.0_amd64.deb");
        std::fs::write(&deb, make_deb(comp)).unwrap();
        let out = ensure_extracted(&deb, &dir.path().join("extract"), "pkg").unwrap();
        assert_eq!(
            std::fs::read(out.join("bin/busybox")).unwrap(),
            b"\x7fELF fake",
            "{comp}"
        );
        let mode = std::fs::metadata(out.join("bin/busybox"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(out.join("bin/sh")).unwrap().to_str(),
            Some("busybox")
        );
        assert_eq!(
            std::fs::read(out.join("usr/share/doc/x/copyright")).unwrap(),
            b"GPL"
        );
    }
}

#[test]
fn re_extraction_is_skipped_only_for_the_same_deb() {
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("pkg_1.0_amd64.deb");
    std::fs::write(&deb, make_deb("xz")).unwrap();
    let root = dir.path().join("extract");
    let out = ensure_extracted(&deb, &root, "pkg").unwrap();
    std::fs::write(out.join("marker"), b"x").unwrap();
    ensure_extracted(&deb, &root, "pkg").unwrap();
    assert!(out.join("marker").exists(), "same deb: tree reused");

    let newer = dir.path().join("pkg_2.0_amd64.deb");
    std::fs::write(&newer, make_deb("gz")).unwrap();
    ensure_extracted(&newer, &root, "pkg").unwrap();
    assert!(!out.join("marker").exists(), "new deb: fresh tree");
}

#[test]
fn rejects_non_deb_files() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.deb");
    std::fs::write(&bogus, b"definitely not an ar archive").unwrap();
    let err = extract_deb(&bogus, &dir.path().join("out")).unwrap_err();
    assert!(err.to_string().contains("bogus.deb"), "{err}");
}

#[test]
fn cached_lookups_pick_newest() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "linux-image-6.1.0-9-cloud-amd64-unsigned_6.1.1-1_amd64.deb",
        "linux-image-6.1.0-10-cloud-amd64-unsigned_6.1.2-1_amd64.deb",
        "busybox-static_1%3a1.35.0-4_amd64.deb",
    ] {
        std::fs::write(dir.path().join(f), b"").unwrap();
    }
    assert_eq!(
        cached_kernel(dir.path()).as_deref(),
        Some("linux-image-6.1.0-10-cloud-amd64-unsigned")
    );
    let bb = cached_deb(dir.path(), BUSYBOX_PACKAGE).unwrap();
    assert!(bb.ends_with("busybox-static_1%3a1.35.0-4_amd64.deb"));
    assert!(
        cached_deb(dir.path(), "busybox").is_none(),
        "prefix must match the whole name"
    );
}
