//! Runs a case on the emulator (`TestMachine::new32` plus the shared layout).

use super::layout::*;
use vireo_emu::cpu::io::IoKind;
use vireo_emu::cpu::run::Stop;
use vireo_emu::testutil::TestMachine;
use vireo_hypervisor::{Segment, Table};

/// Instruction budget per case: sequences are short and jump only forwards, so this is only hit
/// by a runaway emulator.
const BUDGET: u64 = 20_000;

pub struct EmuRunner {
    fixed: Vec<(u64, Vec<u8>)>,
}

impl EmuRunner {
    pub fn new() -> Self {
        EmuRunner {
            fixed: fixed_image(),
        }
    }

    pub fn run(&mut self, case: &Case) -> Outcome {
        let mut code = case.code.clone();
        code.extend_from_slice(&END_BYTES);
        let mut m = TestMachine::new32(&code);
        for (addr, bytes) in &self.fixed {
            m.load(*addr, bytes);
        }
        m.load(DATA, &case.init.data);
        m.load(STACK - STACK_BELOW, &case.init.stack);
        let cpu = &mut m.cpu;
        cpu.gdtr = Table {
            base: GDT,
            limit: (GDT_ENTRIES.len() * 8 - 1) as u16,
        };
        cpu.idtr = Table {
            base: IDT,
            limit: 32 * 8 - 1,
        };
        cpu.tr = Segment::from_gdt_entry(SEL_TSS, GDT_ENTRIES[4]);
        cpu.cr0 = CR0;
        cpu.cr4 = CR4;
        cpu.update_mode();
        for (i, v) in case.init.gpr.iter().enumerate() {
            cpu.gpr[i] = u64::from(*v);
        }
        cpu.flags.set(u64::from(case.init.eflags));
        for (i, v) in case.init.xmm.iter().enumerate() {
            cpu.fpu.xmm[i] = *v;
        }
        cpu.fpu.mxcsr = case.init.mxcsr;
        let stop = m.run(BUDGET);
        let st = snapshot(&m);
        let read = |a: u64, n: usize| m.ram()[a as usize..a as usize + n].to_vec();
        match stop {
            Stop::Io => {
                let Some(w) = m.cpu.io.writes.front().copied() else {
                    return Outcome::Other(format!(
                        "emu: stopped for I/O at eip {:#x}: pending read {:?}",
                        m.cpu.rip, m.cpu.io.pending_read
                    ));
                };
                if w.kind == IoKind::Pio && w.addr == u64::from(END_PORT) {
                    return Outcome::Done(st);
                }
                if w.kind == IoKind::Pio
                    && (u64::from(VEC_PORT)..u64::from(VEC_PORT) + 32).contains(&w.addr)
                {
                    return fault_from_stub((w.addr - u64::from(VEC_PORT)) as u8, st, &read);
                }
                Outcome::Other(format!(
                    "emu: unexpected {:?} write to {:#x} at eip {:#x}",
                    w.kind, w.addr, m.cpu.rip
                ))
            }
            // Exception delivery is not implemented yet: the emulator shuts down with RIP at the
            // faulting instruction and the state before it.
            Stop::Shutdown => Outcome::Fault {
                vector: None,
                eip: m.cpu.rip as u32,
                state: st,
            },
            other => Outcome::Other(format!(
                "emu: stopped with {other:?} at eip {:#x}",
                m.cpu.rip
            )),
        }
    }
}

fn snapshot(m: &TestMachine) -> State {
    let read = |a: u64, n: usize| m.ram()[a as usize..a as usize + n].to_vec();
    let (data, stack) = read_windows(&read);
    let mut gpr = [0u32; 8];
    for (i, g) in gpr.iter_mut().enumerate() {
        *g = m.cpu.gpr[i] as u32;
    }
    let mut xmm = [0u128; 8];
    xmm.copy_from_slice(&m.cpu.fpu.xmm[..8]);
    State {
        gpr,
        eflags: m.cpu.flags.get() as u32,
        xmm,
        mxcsr: m.cpu.fpu.mxcsr,
        data,
        stack,
    }
}
