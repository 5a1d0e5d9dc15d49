//! The fixed newstyle handshake: greeting, then option haggling until the client picks an
//! export (`NBD_OPT_EXPORT_NAME` or `NBD_OPT_GO`), aborts, or hangs up.

use super::proto::*;
use super::stream::Stream;
use super::Exports;
use crate::block::BlockDevice;
use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;

/// Option data beyond this is refused by hanging up: no legitimate option comes close (the
/// longest carry a few 4 KiB strings), and reading it would let a client make us allocate.
pub const MAX_OPTION_LEN: u32 = 64 << 10;

/// What the handshake agreed on: the export and the features of the transmission phase.
pub struct Session {
    pub name: String,
    pub device: Arc<dyn BlockDevice>,
    pub structured: bool,
    /// `base:allocation` was selected for this export.
    pub base_allocation: bool,
}

/// What the option loop keeps between options.
#[derive(Default)]
struct State {
    structured: bool,
    no_zeroes: bool,
    /// The export `base:allocation` was selected for by the last `NBD_OPT_SET_META_CONTEXT`.
    meta_export: Option<String>,
}

/// Runs the handshake. `Ok(None)`: the client left (abort, hang-up, or an export it cannot
/// have through `NBD_OPT_EXPORT_NAME`, which has no way to report an error).
pub fn negotiate(
    r: &mut BufReader<Stream>,
    w: &Stream,
    exports: &dyn Exports,
) -> io::Result<Option<Session>> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    (&*w).write_all(&hello)?;

    let client_flags = read_u32(r)?;
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(invalid(format!(
            "client flags {client_flags:#x} include unknown bits"
        )));
    }
    let mut st = State {
        no_zeroes: client_flags & FLAG_C_NO_ZEROES != 0,
        ..State::default()
    };

    loop {
        let mut head = [0u8; 16];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut c = Cursor::new(&head);
        let (magic, opt, len) = (c.u64(), c.u32().unwrap_or(0), c.u32().unwrap_or(0));
        if magic != Some(IHAVEOPT) {
            return Err(invalid("bad option magic".to_string()));
        }
        if len > MAX_OPTION_LEN {
            return Err(invalid(format!(
                "option {opt} carries {len} bytes, more than the {MAX_OPTION_LEN} allowed"
            )));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data)?;
        tracing::debug!(opt, len, "nbd option");
        match opt {
            OPT_EXPORT_NAME => {
                let Some((name, device)) = std::str::from_utf8(&data)
                    .ok()
                    .and_then(|n| resolve(exports, n).ok())
                else {
                    tracing::warn!("nbd client asked for an unknown export; hanging up");
                    return Ok(None);
                };
                let flags = transmission_flags(&*device, st.structured);
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&device.size().to_be_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
                if !st.no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                (&*w).write_all(&out)?;
                return Ok(Some(session(&st, name, device)));
            }
            OPT_ABORT => {
                // The client may already be gone; either way we are done.
                let _ = reply(w, opt, REP_ACK, &[]);
                return Ok(None);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    reply_err(w, opt, REP_ERR_INVALID, "NBD_OPT_LIST takes no data")?;
                    continue;
                }
                for name in exports.names() {
                    let mut d = (name.len() as u32).to_be_bytes().to_vec();
                    d.extend_from_slice(name.as_bytes());
                    reply(w, opt, REP_SERVER, &d)?;
                }
                reply(w, opt, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                if let Some(s) = info(w, opt, &data, exports, &st)? {
                    return Ok(Some(s));
                }
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    reply_err(
                        w,
                        opt,
                        REP_ERR_INVALID,
                        "NBD_OPT_STRUCTURED_REPLY takes no data",
                    )?;
                    continue;
                }
                st.structured = true;
                reply(w, opt, REP_ACK, &[])?;
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                meta_context(w, opt, &data, exports, &mut st)?;
            }
            _ => reply_err(w, opt, REP_ERR_UNSUP, "option not supported by this server")?,
        }
    }
}

/// `NBD_OPT_INFO` and `NBD_OPT_GO`; returns the session when a GO succeeded.
fn info(
    w: &Stream,
    opt: u32,
    data: &[u8],
    exports: &dyn Exports,
    st: &State,
) -> io::Result<Option<Session>> {
    let Some(req) = parse_info_request(data) else {
        reply_err(w, opt, REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO data")?;
        return Ok(None);
    };
    let (name, device) = match resolve(exports, req.name) {
        Ok(found) => found,
        Err(msg) => {
            reply_err(w, opt, REP_ERR_UNKNOWN, &msg)?;
            return Ok(None);
        }
    };
    let flags = transmission_flags(&*device, st.structured);
    let mut d = INFO_EXPORT.to_be_bytes().to_vec();
    d.extend_from_slice(&device.size().to_be_bytes());
    d.extend_from_slice(&flags.to_be_bytes());
    reply(w, opt, REP_INFO, &d)?;
    if req.requests.contains(&INFO_NAME) {
        let mut d = INFO_NAME.to_be_bytes().to_vec();
        d.extend_from_slice(truncate(&name, MAX_STRING).as_bytes());
        reply(w, opt, REP_INFO, &d)?;
    }
    if req.requests.contains(&INFO_DESCRIPTION) {
        let mut d = INFO_DESCRIPTION.to_be_bytes().to_vec();
        let ro = if device.read_only() {
            ", read-only"
        } else {
            ""
        };
        d.extend_from_slice(format!("Vireo volume {name}{ro}").as_bytes());
        reply(w, opt, REP_INFO, &d)?;
    }
    // Always sent: it costs nothing, and tells every client our 32 MiB request limit.
    let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&preferred_block_size(&*device).to_be_bytes());
    d.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
    reply(w, opt, REP_INFO, &d)?;
    reply(w, opt, REP_ACK, &[])?;
    Ok((opt == OPT_GO).then(|| session(st, name, device)))
}

/// `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`: we know `base:allocation`.
fn meta_context(
    w: &Stream,
    opt: u32,
    data: &[u8],
    exports: &dyn Exports,
    st: &mut State,
) -> io::Result<()> {
    let set = opt == OPT_SET_META_CONTEXT;
    if set {
        // A SET replaces the selection even when it fails.
        st.meta_export = None;
    }
    if !st.structured {
        return reply_err(
            w,
            opt,
            REP_ERR_INVALID,
            "negotiate NBD_OPT_STRUCTURED_REPLY before metadata contexts",
        );
    }
    let Some(req) = parse_meta_request(data) else {
        return reply_err(
            w,
            opt,
            REP_ERR_INVALID,
            "malformed metadata context request",
        );
    };
    let name = match resolve(exports, req.name) {
        Ok((name, _)) => name,
        Err(msg) => return reply_err(w, opt, REP_ERR_UNKNOWN, &msg),
    };
    let matches = |q: &str| {
        if set {
            q == BASE_ALLOCATION
        } else {
            q == BASE_ALLOCATION || q == "base:"
        }
    };
    // LIST with no queries lists everything; SET with none selects nothing.
    let selected = if req.queries.is_empty() {
        !set
    } else {
        req.queries.iter().any(|q| matches(q))
    };
    if selected {
        let mut d = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
        if !set {
            d = 0u32.to_be_bytes().to_vec(); // ids in a LIST are reserved: zero
        }
        d.extend_from_slice(BASE_ALLOCATION.as_bytes());
        reply(w, opt, REP_META_CONTEXT, &d)?;
        if set {
            st.meta_export = Some(name);
        }
    }
    reply(w, opt, REP_ACK, &[])
}

fn session(st: &State, name: String, device: Arc<dyn BlockDevice>) -> Session {
    let base_allocation = st.structured && st.meta_export.as_deref() == Some(name.as_str());
    Session {
        name,
        device,
        structured: st.structured,
        base_allocation,
    }
}

/// Finds an export by name; the empty name means the only export, if there is just one.
pub fn resolve(
    exports: &dyn Exports,
    name: &str,
) -> Result<(String, Arc<dyn BlockDevice>), String> {
    let name = if name.is_empty() {
        let mut names = exports.names();
        if names.len() != 1 {
            return Err(format!(
                "no default export: this server has {} exports; name one (NBD_OPT_LIST shows them)",
                names.len()
            ));
        }
        names.remove(0)
    } else {
        name.to_string()
    };
    match exports.open(&name) {
        Ok(dev) => Ok((name, dev)),
        Err(e) => Err(format!("cannot open export {name:?}: {e}")),
    }
}

pub fn transmission_flags(dev: &dyn BlockDevice, structured: bool) -> u16 {
    // The serving paths share each volume's state, so FLUSH and FUA on one connection cover
    // writes made on any other: multi-conn is safe.
    let mut flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_CAN_MULTI_CONN;
    if dev.read_only() {
        flags |= FLAG_READ_ONLY;
    } else {
        flags |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
    }
    if structured {
        flags |= FLAG_SEND_DF;
    }
    flags
}

/// The device's block size if the protocol allows it (a power of two, at least 512; we cap
/// it at our maximum request size).
fn preferred_block_size(dev: &dyn BlockDevice) -> u32 {
    let bs = dev.block_size();
    if bs.is_power_of_two() && (512..=MAX_PAYLOAD).contains(&bs) {
        bs
    } else {
        4096
    }
}

fn reply(w: &Stream, opt: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    (&*w).write_all(&out)
}

fn reply_err(w: &Stream, opt: u32, kind: u32, msg: &str) -> io::Result<()> {
    tracing::debug!(opt, kind, msg, "nbd option refused");
    reply(w, opt, kind, truncate(msg, MAX_STRING).as_bytes())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
