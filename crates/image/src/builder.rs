//! The `build()` pipeline: resolve, download, extract, assemble, write.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::deb::{self, BUSYBOX_PACKAGE};
use crate::guest::{self, GuestInputs};
use crate::modules::ModulesDep;
use crate::progress::{size, Progress};
use crate::{BuildOptions, GuestImage, ImageError};

const STEPS: usize = 6;

pub(crate) fn run(opts: &BuildOptions) -> Result<GuestImage, ImageError> {
    let started = Instant::now();
    let _lock = lock_cache(&opts.cache_dir)?;
    let debs = opts.cache_dir.join("debs");
    let extract_root = opts.cache_dir.join("extract");
    let mut progress = Progress::new(STEPS);

    progress.step(format!(
        "resolving the newest Debian cloud kernel ({})",
        deb::KERNEL_METAPACKAGE
    ));
    let kernel_pkg = match deb::newest_cloud_kernel() {
        Ok(name) => name,
        // Offline rebuilds: an earlier build's download is good enough.
        Err(e) => match deb::cached_kernel(&debs) {
            Some(name) => {
                progress.note(format!("apt unavailable ({e}); using cached {name}"));
                name
            }
            None => return Err(e),
        },
    };
    progress.note(format!("-> {kernel_pkg}"));

    let kernel_deb = fetch(&mut progress, &kernel_pkg, &debs)?;
    let busybox_deb = fetch(&mut progress, BUSYBOX_PACKAGE, &debs)?;

    progress.step("extracting packages");
    let kernel_tree = deb::ensure_extracted(&kernel_deb, &extract_root, &kernel_pkg)?;
    let busybox_tree = deb::ensure_extracted(&busybox_deb, &extract_root, BUSYBOX_PACKAGE)?;
    let kernel_version = kernel_version(&kernel_tree, &kernel_pkg)?;
    let modules_dir = kernel_tree.join("lib/modules").join(&kernel_version);
    let modules_dep = load_or_generate_modules_dep(&modules_dir)?;
    progress.note(format!(
        "kernel {kernel_version}, {} modules",
        modules_dep.len()
    ));

    progress.step("building initramfs");
    let busybox_path = busybox_tree.join("bin/busybox");
    let busybox = fs::read(&busybox_path).map_err(|_| ImageError::MissingInPackage {
        package: BUSYBOX_PACKAGE.into(),
        what: "bin/busybox".into(),
        path: busybox_tree.clone(),
    })?;
    let applets = guest::busybox_applets(&busybox_path);
    let modules = guest::select_modules(&modules_dir, &modules_dep)?;
    let names: Vec<String> = modules
        .iter()
        .map(|m| crate::modules::module_name(&m.path))
        .collect();
    tracing::debug!(?names, "guest modules in load order");
    let archive = guest::assemble(&GuestInputs {
        busybox: &busybox,
        applets: &applets,
        kernel_version: &kernel_version,
        modules: &modules,
    });
    let initramfs = archive.finish_gzip();

    fs::create_dir_all(&opts.out_dir).map_err(ImageError::io("creating", &opts.out_dir))?;
    let kernel_src = kernel_tree
        .join("boot")
        .join(format!("vmlinuz-{kernel_version}"));
    let kernel = opts.out_dir.join("vmlinuz");
    let initrd = opts.out_dir.join("initramfs.cpio.gz");
    let kernel_bytes = fs::read(&kernel_src).map_err(|_| ImageError::MissingInPackage {
        package: kernel_pkg.clone(),
        what: format!("boot/vmlinuz-{kernel_version}"),
        path: kernel_tree.clone(),
    })?;
    write_atomic(&kernel, &kernel_bytes)?;
    write_atomic(&initrd, &initramfs)?;
    progress.note(format!(
        "{} modules ({}), {} busybox applets, {} entries",
        modules.len(),
        names.join(" "),
        applets.len(),
        archive.len()
    ));
    progress.note(format!(
        "kernel    {} ({})",
        kernel.display(),
        size(kernel_bytes.len() as u64)
    ));
    progress.note(format!(
        "initramfs {} ({})",
        initrd.display(),
        size(initramfs.len() as u64)
    ));

    progress.step("writing ext4 root disk (mke2fs)");
    let disk_started = Instant::now();
    let rootfs = opts.out_dir.join("rootfs.ext4");
    let disk_size = crate::rootfs::write(&archive, &rootfs)?;
    progress.note(format!(
        "rootfs    {} ({}, label {}, in {:.1}s)",
        rootfs.display(),
        size(disk_size),
        crate::rootfs::LABEL,
        disk_started.elapsed().as_secs_f64()
    ));
    progress.note(format!("done in {:.1}s", started.elapsed().as_secs_f64()));

    Ok(GuestImage {
        kernel,
        initrd,
        rootfs,
        kernel_version,
        modules_dir,
    })
}

/// Takes the cache's exclusive lock (released when the returned file drops), so builds that
/// share a cache, concurrent `vireo image build`s or test threads, never download into or
/// unpack over each other: the later one waits, then finds everything cached.
fn lock_cache(cache: &Path) -> Result<fs::File, ImageError> {
    fs::create_dir_all(cache).map_err(ImageError::io("creating", cache))?;
    let path = cache.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(ImageError::io("opening", &path))?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!("waiting for another image build using {}", cache.display());
        }
        Err(fs::TryLockError::Error(e)) => return Err(ImageError::io("locking", &path)(e)),
    }
    file.lock().map_err(ImageError::io("locking", &path))?;
    Ok(file)
}

/// Makes sure the .deb for `name` is cached, with a progress step either way.
fn fetch(progress: &mut Progress, name: &str, debs: &Path) -> Result<PathBuf, ImageError> {
    let mut announced = false;
    let fetched = deb::fetch(name, debs, |info| {
        let sz = info
            .size
            .map(|s| format!(" ({})", size(s)))
            .unwrap_or_default();
        progress.step(format!("downloading {name} {}{sz} ...", info.version));
        announced = true;
    })?;
    if !announced {
        let sz = fs::metadata(&fetched.path)
            .map(|m| size(m.len()))
            .unwrap_or_default();
        progress.step(format!(
            "{name}: using cached {} ({sz})",
            display_name(&fetched.path)
        ));
    }
    Ok(fetched.path)
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The kernel release: the single directory under lib/modules, which must
/// also have a matching boot/vmlinuz-<release>.
fn kernel_version(tree: &Path, package: &str) -> Result<String, ImageError> {
    let dir = tree.join("lib/modules");
    let missing = || ImageError::MissingInPackage {
        package: package.into(),
        what: "lib/modules/<version> with a matching boot/vmlinuz-<version>".into(),
        path: tree.to_path_buf(),
    };
    let entries = fs::read_dir(&dir).map_err(|_| missing())?;
    let mut versions: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|v| tree.join("boot").join(format!("vmlinuz-{v}")).is_file())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(missing)
}

/// Uses an existing modules.dep (a depmod-made one, or ours from an earlier
/// build) or generates one from the modules' .modinfo. Debian's packages
/// leave modules.dep to depmod in postinst, so on first build it is absent.
fn load_or_generate_modules_dep(modules_dir: &Path) -> Result<ModulesDep, ImageError> {
    let path = modules_dir.join("modules.dep");
    if let Ok(text) = fs::read_to_string(&path) {
        let md = ModulesDep::parse(&text);
        if !md.is_empty() {
            return Ok(md);
        }
    }
    tracing::debug!(dir = %modules_dir.display(), "generating modules.dep from .modinfo");
    let text = ModulesDep::from_modinfo(modules_dir)?.render();
    write_atomic(&path, text.as_bytes())?;
    // Re-parse what was written so the first build resolves exactly like
    // later ones that read the file (keeps images reproducible).
    Ok(ModulesDep::parse(&text))
}

/// Writes via a temporary file + rename, so readers (and re-runs after an
/// interrupted build) never see a half-written kernel or initramfs.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, data).map_err(ImageError::io("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(ImageError::io("renaming into place", path))
}
