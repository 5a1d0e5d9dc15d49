//! Tests for the system instructions.

use crate::cpu::interrupt::testenv::*;
use crate::cpu::run::Stop;
use crate::cpu::{cr, flags, msr, Exception, Seg};
use crate::testutil::{TestMachine, CODE, DATA, PML4, STACK};
use iced_x86::code_asm::*;

/// A 64-bit machine with the environment and a HLT handler for `vectors`.
fn machine(code: &[u8], vectors: &[u8]) -> TestMachine {
    let mut m = TestMachine::new64(code);
    setup64(&mut m);
    let h = handler(&mut m, 0, &asm(64, HANDLERS, |a| a.hlt()));
    for &v in vectors {
        gate64(&mut m, v, h, 0, 0, false);
    }
    m
}

fn frame(m: &TestMachine, i: u64) -> u64 {
    m.read_u64(m.cpu.gpr[4] + i * 8)
}

fn cpuid(m: &TestMachine, leaf: u32, sub: u32) -> [u32; 4] {
    m.cpu.cpuid_query(leaf, sub)
}

#[test]
fn cpuid_identity() {
    let code = asm(64, CODE, |a| {
        a.cpuid()?;
        a.hlt()
    });
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[0] = 0;
    assert_eq!(m.run(10), Stop::Halt);
    let mut vendor = Vec::new();
    for r in [3, 2, 1] {
        vendor.extend_from_slice(&(m.cpu.gpr[r] as u32).to_le_bytes());
    }
    assert_eq!(&vendor, b"GenuineIntel");
    assert_eq!(m.cpu.gpr[0], 0x16);

    let l1 = cpuid(&m, 1, 0);
    assert_eq!(l1[0], 0x000806f8, "family 6 model 0x8f stepping 8");
    assert_eq!((l1[1] >> 8) & 0xff, 8, "CLFLUSH line size");
    assert_eq!(l1[3] & (1 << 28), 0, "no HTT");
    assert_ne!(l1[2] & (1 << 24), 0, "TSC deadline");
    assert_eq!(l1[2] & (1 << 26), 0, "no XSAVE");
    assert_eq!(cpuid(&m, 0x15, 0), [1, 1, 1_000_000_000, 0]);
    assert_eq!(cpuid(&m, 0x16, 0)[0], 1000);
    // Subleaves of leaf 4; the null descriptor ends the list.
    assert_eq!(cpuid(&m, 4, 0)[0] & 0x1f, 1);
    assert_eq!(cpuid(&m, 4, 3)[0] & 0xff, (3 << 5) | 3);
    assert_eq!(cpuid(&m, 4, 4)[0] & 0x1f, 0);
    assert_eq!(cpuid(&m, 4, 2)[2] + 1, 1024, "L2 sets");
    let l7 = cpuid(&m, 7, 0);
    assert_eq!(l7[1], 1 | (1 << 9));
    assert_ne!(l7[3] & (1 << 29), 0);
    // Above the maximum: the highest basic leaf, as Intel does.
    assert_eq!(cpuid(&m, 0x17, 0), cpuid(&m, 0x16, 0));
    assert_eq!(cpuid(&m, 0x8000_0009, 0), cpuid(&m, 0x16, 0));
    // In range but absent: zeros.
    assert_eq!(cpuid(&m, 0xd, 0), [0; 4]);
    assert_eq!(cpuid(&m, 0x8000_0008, 0)[0], 0x3028);
    let ext = cpuid(&m, 0x8000_0001, 0);
    assert_ne!(ext[3] & (1 << 29), 0, "LM");
    assert_ne!(ext[3] & (1 << 20), 0, "NX");
    let mut brand = Vec::new();
    for l in 0x8000_0002..=0x8000_0004u32 {
        for r in cpuid(&m, l, 0) {
            brand.extend_from_slice(&r.to_le_bytes());
        }
    }
    assert!(brand.starts_with(b"Vireo x86-64 emulator\0"));
    assert_eq!(cpuid(&m, 0x4000_0000, 0)[0], 0x4000_0001);
}

#[test]
fn cpuid_follows_an_installed_table() {
    let mut m = TestMachine::new64(&[]);
    let mut t = crate::cpu::cpuid::supported();
    t.retain(|e| e.function != 0xb);
    t.push(vireo_hypervisor::CpuidEntry {
        function: 0xb,
        index: 1,
        significant_index: true,
        eax: 7,
        ..Default::default()
    });
    m.cpu.cpuid = t;
    assert_eq!(cpuid(&m, 0xb, 1)[0], 7);
    assert_eq!(cpuid(&m, 0xb, 0), [0; 4]);
}

#[test]
fn rdmsr_of_unknown_msr_raises_gp() {
    let code = asm(64, CODE, |a| a.rdmsr());
    let mut m = machine(&code, &[Exception::GP]);
    m.cpu.gpr[1] = 0x1234_5678;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(frame(&m, 0), 0, "#GP(0)");
    assert_eq!(frame(&m, 1), CODE);
}

#[test]
fn msr_file() {
    let code = asm(64, CODE, |a| {
        a.wrmsr()?;
        a.mov(ecx, msr::LSTAR)?;
        a.rdmsr()?;
        a.hlt()
    });
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[1] = u64::from(msr::LSTAR);
    m.cpu.gpr[0] = 0x8765_4321;
    m.cpu.gpr[2] = 0xffff_ffff;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!((m.cpu.gpr[2], m.cpu.gpr[0]), (0xffff_ffff, 0x8765_4321));
    assert_eq!(m.cpu.msr.lstar, 0xffff_ffff_8765_4321);

    let c = &mut m.cpu;
    assert!(c.write_msr(msr::LSTAR, 0x8000_0000_0000_0000).is_err());
    c.write_msr(msr::IA32_TSC, 1 << 40).expect("TSC");
    let t = c.tsc();
    assert!((1 << 40..(1 << 40) + 1_000_000_000).contains(&t));
    assert_eq!(
        c.read_msr(msr::IA32_ARCH_CAPABILITIES),
        Ok(msr::ARCH_CAPABILITIES)
    );
    assert!(c.write_msr(msr::IA32_PAT, 0x0007_0406_0007_0402).is_err());
    c.write_msr(msr::IA32_PAT, 0x0007_0106_0007_0406)
        .expect("PAT");
    assert_eq!(c.read_msr(msr::IA32_MTRRCAP), Ok(0));
    assert!(c.read_msr(0x2ff).is_err(), "MTRRdefType is #GP");
    assert!(c.read_msr(msr::IA32_PRED_CMD).is_err());
    c.write_msr(msr::IA32_PRED_CMD, 1).expect("IBPB");
    c.write_msr(msr::IA32_BIOS_SIGN_ID, 0)
        .expect("microcode signature");
    c.write_msr(msr::FS_BASE, 0x1000).expect("FS base");
    assert_eq!(c.seg[Seg::Fs as usize].base, 0x1000);
    // EFER: LME cannot change with paging on; NXE can.
    assert!(c.write_msr(msr::EFER, cr::EFER_LMA | cr::EFER_NXE).is_err());
    c.write_msr(msr::EFER, cr::EFER_LME | cr::EFER_LMA | cr::EFER_SCE)
        .expect("EFER");
    assert_eq!(c.efer & cr::EFER_NXE, 0);
    assert!(c.long64);
    assert!(c.write_msr(msr::EFER, 1 << 20).is_err());
}

#[test]
fn syscall_sysret_round_trip() {
    let user = asm(64, USER_CODE, |a| {
        a.syscall()?;
        a.int3()
    });
    let mut m = TestMachine::new64(&[]);
    setup64(&mut m);
    user_pages(&mut m);
    m.load(USER_CODE, &user);
    enter_user64(&mut m);
    let entry = handler(
        &mut m,
        0,
        &asm(64, HANDLERS, |a| {
            a.swapgs()?;
            a.mov(rax, 42u64)?;
            a.mov(rdx, rsp)?;
            a.swapgs()?;
            a.sysretq()
        }),
    );
    let stop = handler(&mut m, 1, &asm(64, HANDLERS + 0x100, |a| a.hlt()));
    gate64(&mut m, Exception::BP, stop, 3, 0, false);
    let c = &mut m.cpu;
    c.msr.star = (u64::from(UCODE32 & !3) << 48) | (u64::from(KCODE) << 32);
    c.msr.lstar = entry;
    c.msr.sfmask = flags::IF | flags::TF | flags::DF;
    c.msr.kernel_gs_base = 0xabc;
    c.flags.set_bit(flags::IF, true);
    c.flags.set_bit(flags::DF, true);
    assert_eq!(m.run(100), Stop::Halt);
    let c = &m.cpu;
    assert_eq!(c.gpr[0], 42);
    assert_eq!(c.gpr[1], USER_CODE + 2, "RCX = return address");
    assert_ne!(c.gpr[11] & flags::IF, 0, "R11 = user RFLAGS");
    assert_ne!(c.gpr[11] & flags::DF, 0);
    assert_eq!(c.gpr[2], USER_STACK, "SYSCALL keeps RSP");
    assert_eq!(frame(&m, 0), USER_CODE + 3, "back in ring 3 after SYSRET");
    assert_eq!(frame(&m, 1), u64::from(UCODE));
    assert_eq!(frame(&m, 4), u64::from(UDATA));
    assert_ne!(frame(&m, 2) & flags::IF, 0, "SYSRET restored IF");
    assert_eq!(c.msr.kernel_gs_base, 0xabc);
}

#[test]
fn sysret_to_non_canonical_rcx_is_gp_in_ring0() {
    let code = asm(64, CODE, |a| a.sysretq());
    let mut m = machine(&code, &[Exception::GP]);
    m.cpu.gpr[1] = 0x8000_0000_0000_0000;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(frame(&m, 1), CODE);
    assert_eq!(frame(&m, 2), u64::from(KCODE));
}

#[test]
fn protected_mode_to_long_mode_like_linux() {
    const TARGET: u64 = CODE + 0x200;
    let mut code = asm(32, CODE, |a| {
        a.lgdt(dword_ptr(DATA))?;
        a.mov(eax, cr4)?;
        a.or(eax, 0x20)?;
        a.mov(cr4, eax)?;
        a.mov(eax, PML4 as u32)?;
        a.mov(cr3, eax)?;
        a.mov(ecx, 0xc000_0080u32)?;
        a.rdmsr()?;
        a.or(eax, 0x100)?;
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32)?;
        a.mov(cr0, eax)?;
        // Linux's startup_32 enters 64-bit code with LRET.
        a.push(u32::from(KCODE))?;
        a.push(TARGET as u32)?;
        a.retf()
    });
    code.resize((TARGET - CODE) as usize, 0x90);
    code.extend(asm(64, TARGET, |a| {
        a.mov(rax, 0x1_2345_6789u64)?;
        a.mov(ax, u32::from(KDATA))?;
        a.mov(ss, ax)?;
        // A far jump through memory to 64-bit code.
        a.jmp(fword_ptr(DATA + 0x10))?;
        a.hlt()
    }));
    let after = TARGET + 0x100;
    let tail = asm(64, after, |a| a.hlt());
    let mut m = TestMachine::new32(&code);
    m.load(after, &tail);
    page_tables(&mut m);
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        w64(&mut m, GDT + i as u64 * 8, *e);
    }
    m.load(DATA, &0x3fu16.to_le_bytes());
    m.load(DATA + 2, &(GDT as u32).to_le_bytes());
    // m16:32 far pointer (JMP FAR [mem] with a 32-bit offset).
    m.load(DATA + 0x10, &(after as u32).to_le_bytes());
    m.load(DATA + 0x14, &KCODE.to_le_bytes());
    assert_eq!(m.run(100), Stop::Halt);
    let c = &m.cpu;
    assert!(c.long64);
    assert_ne!(c.efer & cr::EFER_LMA, 0);
    assert_eq!(c.gpr[0] & !0xffff, 0x1_2345_0000);
    assert_eq!(c.rip, after + 1);
    assert_eq!(c.seg[Seg::Cs as usize].selector, KCODE);
    assert_eq!(c.gdtr.base, GDT);
    // The accessed bit of the code descriptor was set.
    assert_ne!(m.read_u64(GDT + 0x10) & (1 << 40), 0);
}

#[test]
fn far_jump_and_lretq_in_64bit_mode() {
    let target = CODE + 0x80;
    let mut code = asm(64, CODE, |a| {
        a.push(i32::from(KCODE32))?;
        a.push(i32::try_from(target).unwrap_or(0))?;
        a.db(&[0x48, 0xcb]) // retfq: into 32-bit compatibility mode
    });
    code.resize(0x80, 0x90);
    // Compatibility mode: far jump back to 64-bit code.
    let back = CODE + 0x100;
    code.extend(asm(32, target, |a| {
        a.db(&[0xea])?;
        a.db(&(back as u32).to_le_bytes())?;
        a.db(&KCODE.to_le_bytes())
    }));
    code.resize(0x100, 0x90);
    code.extend(asm(64, back, |a| a.hlt()));
    let mut m = machine(&code, &[]);
    assert_eq!(m.run(100), Stop::Halt);
    assert!(m.cpu.long64);
    assert_eq!(m.cpu.rip, back + 1);
    assert_eq!(m.cpu.gpr[4], STACK);
}

#[test]
fn segment_loads_check_descriptors() {
    let code = asm(64, CODE, |a| {
        a.mov(ax, u32::from(KDATA))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.xor(eax, eax)?;
        a.mov(fs, ax)?;
        a.mov(ax, u32::from(UDATA))?;
        a.mov(ss, ax)?;
        a.hlt()
    });
    let mut m = machine(&code, &[Exception::GP]);
    m.cpu.seg[Seg::Fs as usize].base = 0x1234;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(frame(&m, 0), u64::from(UDATA & !3), "#GP(selector) for SS");
    assert_ne!(m.read_u64(GDT + 0x18) & (1 << 40), 0, "accessed bit");
    assert_eq!(m.cpu.seg[Seg::Ds as usize].selector, KDATA);
    let fs_seg = m.cpu.seg[Seg::Fs as usize];
    assert!(
        fs_seg.unusable && fs_seg.base == 0,
        "null FS clears the base (Intel)"
    );
}

#[test]
fn not_present_segment_is_np() {
    let code = asm(64, CODE, |a| {
        a.mov(ax, u32::from(KDATA))?;
        a.mov(gs, ax)?;
        a.hlt()
    });
    let mut m = machine(&code, &[Exception::NP]);
    w64(&mut m, GDT + 0x18, GDT_ENTRIES[3] & !(1 << 47));
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(frame(&m, 0), u64::from(KDATA));
}

#[test]
fn descriptor_tables_and_tr() {
    let code = asm(64, CODE, |a| {
        a.sgdt(ptr(DATA))?;
        a.mov(ax, u32::from(TSS_SEL))?;
        a.ltr(ax)?;
        a.str(ebx)?;
        a.mov(ecx, u32::from(UDATA))?;
        a.lar(edx, ecx)?;
        a.lsl(esi, ecx)?;
        a.hlt()
    });
    let mut m = machine(&code, &[]);
    m.cpu.tr = Default::default();
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.read_u64(DATA) & 0xffff, 0x47);
    assert_eq!(m.read_u64(DATA + 2), GDT);
    assert_eq!(m.cpu.gpr[3], u64::from(TSS_SEL));
    assert_eq!(m.cpu.tr.base, TSS);
    assert_eq!(m.cpu.tr.type_, 0xb);
    assert_eq!((m.read_u64(GDT + 0x38) >> 40) & 0xf, 0xb, "TSS marked busy");
    assert_eq!(
        m.cpu.gpr[2], 0x00c0_f300,
        "LAR access rights (limit bits masked)"
    );
    assert_eq!(m.cpu.gpr[6], 0xffff_ffff, "LSL limit");
    assert!(m.cpu.flags.zf());
}

#[test]
fn popf_in_ring3_keeps_if_and_iopl() {
    let user = asm(64, USER_CODE, |a| {
        a.push(0x3200)?; // IF | IOPL=3
        a.popfq()?;
        a.pushfq()?;
        a.pop(rbx)?;
        a.int3()
    });
    let mut m = TestMachine::new64(&[]);
    setup64(&mut m);
    user_pages(&mut m);
    m.load(USER_CODE, &user);
    enter_user64(&mut m);
    let stop = handler(&mut m, 0, &asm(64, HANDLERS, |a| a.hlt()));
    gate64(&mut m, Exception::BP, stop, 3, 0, false);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[3] & (flags::IF | flags::IOPL), 0);
}

#[test]
fn control_registers() {
    let code = asm(64, CODE, |a| {
        a.mov(rax, cr0)?;
        a.mov(rbx, cr4)?;
        a.or(rbx, 1 << 16)?; // FSGSBASE
        a.mov(cr4, rbx)?;
        a.mov(rcx, 0x5000u64)?;
        a.wrgsbase(rcx)?;
        a.rdgsbase(rdx)?;
        a.mov(rsi, 1u64 << 18)?; // OSXSAVE: not supported
        a.mov(cr4, rsi)?;
        a.hlt()
    });
    let mut m = machine(&code, &[Exception::GP]);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[0], m.cpu.cr0);
    assert_eq!(m.cpu.gpr[2], 0x5000);
    assert_eq!(m.cpu.seg[Seg::Gs as usize].base, 0x5000);
    assert_ne!(m.cpu.cr4 & cr::CR4_FSGSBASE, 0);
    assert_eq!(frame(&m, 0), 0, "#GP(0) for a reserved CR4 bit");
}

#[test]
fn clearing_paging_in_64bit_mode_is_gp() {
    let code = asm(64, CODE, |a| {
        a.mov(rax, cr0)?;
        a.btr(eax, 31)?;
        a.mov(cr0, rax)?;
        a.hlt()
    });
    let mut m = machine(&code, &[Exception::GP]);
    assert_eq!(m.run(100), Stop::Halt);
    assert!(m.cpu.paging());
    assert_eq!(m.cpu.rip, HANDLERS + 1);
}
