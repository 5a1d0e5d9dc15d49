//! Runs a case on `/dev/kvm`. This uses kvm-ioctls directly rather than the `Vcpu` trait so that
//! it can read and write the XMM registers (KVM_GET_FPU / KVM_SET_FPU). One VM and one vCPU serve
//! every case; each run rewrites the memory windows and the whole register state.

use super::layout::*;
use kvm_bindings::{
    kvm_fpu, kvm_regs, kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vireo_hypervisor::Segment;

pub struct KvmRunner {
    _kvm: Kvm,
    _vm: VmFd,
    vcpu: VcpuFd,
    mem: *mut u8,
}

fn seg(sel: u16) -> kvm_segment {
    let s = Segment::from_gdt_entry(sel, GDT_ENTRIES[usize::from(sel >> 3)]);
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present.into(),
        dpl: s.dpl,
        db: s.db.into(),
        s: s.s.into(),
        l: s.l.into(),
        g: s.g.into(),
        avl: s.avl.into(),
        unusable: 0,
        padding: 0,
    }
}

impl KvmRunner {
    /// Opens /dev/kvm and builds the VM; the error says what failed.
    pub fn new() -> Result<Self, String> {
        let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        vm.set_tss_address(0xfffb_d000)
            .map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
        // SAFETY: an anonymous private mapping; we own it for the runner's lifetime.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RAM,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err("mmap of guest memory failed".into());
        }
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM as u64,
            userspace_addr: mem as u64,
        };
        // SAFETY: the mapping lives as long as the VM (both are dropped together; see Drop).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        let mut r = KvmRunner {
            _kvm: kvm,
            _vm: vm,
            vcpu,
            mem: mem as *mut u8,
        };
        for (addr, bytes) in fixed_image() {
            r.write(addr, &bytes);
        }
        // The first KVM_RUN of a vCPU resets its FPU state (on kvm_pvm at least), which would
        // lose the XMM values of the first case: run an empty case once.
        let init = State {
            gpr: [0, 0, 0, 0, STACK as u32, EBP_BASE, 0, 0],
            eflags: 2,
            xmm: [0; 8],
            mxcsr: 0x1f80,
            data: vec![0; DATA_SIZE],
            stack: vec![0; (STACK_BELOW + STACK_ABOVE) as usize],
        };
        let empty = Case {
            code: Vec::new(),
            init,
            insns: Vec::new(),
            undef_end: 0,
            groups: Vec::new(),
        };
        match r.run(&empty)? {
            Outcome::Done(_) => Ok(r),
            _ => Err("KVM did not run the empty case to its end".into()),
        }
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) {
        assert!(addr as usize + bytes.len() <= RAM);
        // SAFETY: in bounds of the RAM-sized mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.add(addr as usize), bytes.len())
        }
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        assert!(addr as usize + len <= RAM);
        let mut v = vec![0; len];
        // SAFETY: in bounds of the RAM-sized mapping (checked above).
        unsafe { std::ptr::copy_nonoverlapping(self.mem.add(addr as usize), v.as_mut_ptr(), len) }
        v
    }

    pub fn run(&mut self, case: &Case) -> Result<Outcome, String> {
        let mut code = case.code.clone();
        code.extend_from_slice(&END_BYTES);
        // Leave no stale bytes of a longer previous case behind the new code.
        code.resize(code.len() + 64, 0xcc);
        self.write(CODE, &code);
        self.write(DATA, &case.init.data);
        self.write(STACK - STACK_BELOW, &case.init.stack);

        let mut s = self
            .vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        s.cs = seg(SEL_CODE);
        for d in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
            *d = seg(SEL_DATA);
        }
        s.tr = seg(SEL_TSS);
        s.ldt = kvm_segment {
            unusable: 1,
            ..Default::default()
        };
        s.gdt.base = GDT;
        s.gdt.limit = (GDT_ENTRIES.len() * 8 - 1) as u16;
        s.idt.base = IDT;
        s.idt.limit = 32 * 8 - 1;
        s.cr0 = CR0;
        s.cr4 = CR4;
        s.cr3 = 0;
        s.efer = 0;
        self.vcpu
            .set_sregs(&s)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        let g = &case.init.gpr;
        let regs = kvm_regs {
            rax: g[0].into(),
            rcx: g[1].into(),
            rdx: g[2].into(),
            rbx: g[3].into(),
            rsp: g[4].into(),
            rbp: g[5].into(),
            rsi: g[6].into(),
            rdi: g[7].into(),
            rip: CODE,
            rflags: case.init.eflags.into(),
            ..Default::default()
        };
        self.vcpu
            .set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        // XMM and MXCSR through the XSAVE image: KVM_SET_FPU ignores MXCSR here.
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.vcpu
            .set_fpu(&fpu)
            .map_err(|e| format!("KVM_SET_FPU: {e}"))?;
        let mut xs = self
            .vcpu
            .get_xsave()
            .map_err(|e| format!("KVM_GET_XSAVE: {e}"))?;
        xs.region[6] = case.init.mxcsr;
        // XSTATE_BV (header at byte 512): mark the x87 and SSE state as present, or XRSTOR
        // would load their initial (zero) values instead.
        xs.region[128] |= 0b11;
        for (i, x) in case.init.xmm.iter().enumerate() {
            for w in 0..4 {
                xs.region[40 + i * 4 + w] = (x >> (32 * w)) as u32;
            }
        }
        // SAFETY: `xs` is a complete kvm_xsave image KVM itself returned, with only the legacy
        // SSE fields and XSTATE_BV's x87/SSE bits changed.
        unsafe { self.vcpu.set_xsave(&xs) }.map_err(|e| format!("KVM_SET_XSAVE: {e}"))?;

        let port = loop {
            match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, _)) => break port,
                Ok(VcpuExit::Intr) => continue,
                Ok(other) => {
                    let what = format!("{other:?}");
                    let rip = self.vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                    return Ok(Outcome::Other(format!("kvm: exit {what} at eip {rip:#x}")));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(format!("KVM_RUN: {e}")),
            }
        };
        let st = self.snapshot()?;
        self.complete_io()?;
        let read = |a: u64, n: usize| self.read(a, n);
        if port == END_PORT {
            Ok(Outcome::Done(st))
        } else if (VEC_PORT..VEC_PORT + 32).contains(&port) {
            Ok(fault_from_stub((port - VEC_PORT) as u8, st, &read))
        } else {
            Ok(Outcome::Other(format!(
                "kvm: out to unexpected port {port:#x}"
            )))
        }
    }

    /// An I/O exit is only complete once KVM_RUN is entered again (KVM's API: until then the
    /// instruction's emulation context is pending, and it would be finished against the next
    /// case's registers, continuing at the old RIP). Enter with immediate_exit set to finish it
    /// without running guest code.
    fn complete_io(&mut self) -> Result<(), String> {
        self.vcpu.set_kvm_immediate_exit(1);
        let r = match self.vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(format!("KVM_RUN (completing I/O): {e}")),
            Ok(exit) => Err(format!("KVM_RUN (completing I/O) ran the guest: {exit:?}")),
        };
        self.vcpu.set_kvm_immediate_exit(0);
        r
    }

    fn snapshot(&self) -> Result<State, String> {
        let r = self
            .vcpu
            .get_regs()
            .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        let read = |a: u64, n: usize| self.read(a, n);
        let (data, stack) = read_windows(&read);
        let xs = self
            .vcpu
            .get_xsave()
            .map_err(|e| format!("KVM_GET_XSAVE: {e}"))?;
        let w = |i: usize| u128::from(xs.region[i]);
        let mut xmm = [0u128; 8];
        for (i, x) in xmm.iter_mut().enumerate() {
            let b = 40 + i * 4;
            *x = w(b) | (w(b + 1) << 32) | (w(b + 2) << 64) | (w(b + 3) << 96);
        }
        let mxcsr = xs.region[6];
        Ok(State {
            gpr: [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi].map(|v| v as u32),
            eflags: r.rflags as u32,
            xmm,
            mxcsr,
            data,
            stack,
        })
    }
}

impl Drop for KvmRunner {
    fn drop(&mut self) {
        // The VM fd is closed after this (fields drop after `drop`), but KVM holds no reference
        // to user memory once the VM is gone; unmapping first is harmless because nothing runs.
        // SAFETY: `mem` came from mmap with this size and is not used after this point.
        unsafe { libc::munmap(self.mem as *mut libc::c_void, RAM) };
    }
}
