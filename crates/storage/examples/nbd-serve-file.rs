//! Serves raw files over NBD through `NbdServer` and `FileDevice`: the Vireo side of
//! `scripts/bench-storage --vireo-file`, and a handy way to poke the server by hand.
//!
//! Usage: nbd-serve-file unix:PATH|tcp:HOST:PORT NAME=FILE[:ro]...
//! Serves until its standard input is closed (or it is killed).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use vireo_storage::nbd::{Exports, Listen, NbdServer};
use vireo_storage::{BlockDevice, FileDevice, StorageError};

struct Files(BTreeMap<String, Arc<dyn BlockDevice>>);

impl Exports for Files {
    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, StorageError> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::NotFound(format!("no export named {name:?}")))
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("nbd-serve-file: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let usage = "usage: nbd-serve-file unix:PATH|tcp:HOST:PORT NAME=FILE[:ro]...";
    let mut args = std::env::args().skip(1);
    let listen: Listen = args
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e: StorageError| e.to_string())?;
    let mut files = BTreeMap::new();
    for arg in args {
        let (name, file) = arg.split_once('=').ok_or(usage)?;
        let (file, ro) = match file.strip_suffix(":ro") {
            Some(f) => (f, true),
            None => (file, false),
        };
        let dev = FileDevice::open(Path::new(file), ro).map_err(|e| format!("{file}: {e}"))?;
        files.insert(name.to_string(), Arc::new(dev) as Arc<dyn BlockDevice>);
    }
    if files.is_empty() {
        return Err(usage.to_string());
    }
    let server = NbdServer::start(&listen, Arc::new(Files(files))).map_err(|e| e.to_string())?;
    println!("listening on {}", server.listen());
    // Until stdin closes: a parent stops us cleanly (and the socket goes) by closing it.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(server);
    Ok(())
}
