//! Hardware-assisted virtualization through Linux KVM (`/dev/kvm`).

use crate::x86::{CpuidEntry, Regs, Segment, Sregs, Table};
use crate::{Capabilities, Error, Hypervisor, Result, Vcpu, VcpuExit, Vm};
use kvm_bindings::{
    kvm_dtable, kvm_fpu, kvm_pit_config, kvm_regs, kvm_segment, kvm_sregs,
    kvm_userspace_memory_region, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

/// Where KVM puts the real-mode TSS and identity map that VMX needs; just below the 4 GiB
/// BIOS area, inside the MMIO hole and away from every device.
const KVM_TSS_ADDR: usize = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

const KVM_CPUID_FLAG_SIGNIFICANT_INDEX: u32 = 1;

fn ioctl_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |e| Error::Ioctl {
        op,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

pub struct KvmHypervisor {
    kvm: Kvm,
    caps: Capabilities,
}

impl KvmHypervisor {
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| Error::Open {
            path: "/dev/kvm",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(Error::Unsupported(format!(
                "/dev/kvm speaks KVM API version {api}, Vireo needs version 12"
            )));
        }
        for (cap, name) in [
            (kvm_ioctls::Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (kvm_ioctls::Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (kvm_ioctls::Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::Unsupported(format!(
                    "/dev/kvm lacks {name}, which Vireo needs"
                )));
            }
        }
        let pvm = Self::nested_pvm();
        let caps = Capabilities {
            long_mode: pvm.is_none(),
            long_mode_note: pvm,
            max_vcpus: kvm.get_max_vcpus().min(254),
            emulated: false,
        };
        Ok(Self { kvm, caps })
    }

    /// `kvm_pvm` is a software hypervisor for nested setups: it runs real-mode and 32-bit code
    /// through KVM's instruction emulator, but a 64-bit guest kernel must be built for PVM. A
    /// stock x86-64 Linux kernel would never make progress, so we say so up front.
    fn nested_pvm() -> Option<String> {
        std::path::Path::new("/sys/module/kvm_pvm").exists().then(|| {
            "/dev/kvm is provided by kvm_pvm, a nested software hypervisor that cannot run a stock \
             64-bit kernel (it runs only 32-bit and real-mode guest code, or PVM-built kernels)"
                .to_string()
        })
    }
}

impl Hypervisor for KvmHypervisor {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn create_vm(&self) -> Result<Box<dyn Vm>> {
        let vm = self.kvm.create_vm().map_err(ioctl_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDR)
            .map_err(ioctl_err("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(ioctl_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        // In-kernel PIC, IOAPIC and LAPICs, and the PIT: interrupts and timers never leave
        // the kernel, which is what makes KVM fast.
        vm.create_irq_chip()
            .map_err(ioctl_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(ioctl_err("KVM_CREATE_PIT2"))?;
        vm.set_gsi_routing(&pc_irq_routing()?)
            .map_err(ioctl_err("KVM_SET_GSI_ROUTING"))?;
        let supported = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err("KVM_GET_SUPPORTED_CPUID"))?;
        Ok(Box::new(KvmVm { vm, supported }))
    }
}

/// The PC's interrupt wiring: ISA IRQs 0-15 on the two 8259s, and every GSI on the IOAPIC pin
/// of the same number except IRQ 0 (the PIT), which a PC wires to IOAPIC pin 2. The MADT tells
/// the guest so (an ISA override IRQ 0 -> GSI 2); KVM's default routing would put the PIT on
/// pin 0 instead, and the guest would never see a timer tick through the IOAPIC.
fn pc_irq_routing() -> Result<kvm_bindings::KvmIrqRouting> {
    use kvm_bindings::{
        kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
        KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP,
    };
    let route = |gsi: u32, irqchip: u32, pin: u32| kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip, pin },
        },
        ..Default::default()
    };
    let mut entries = Vec::new();
    for irq in (0..16).filter(|&i| i != 2) {
        let (chip, pin) = if irq < 8 {
            (KVM_IRQCHIP_PIC_MASTER, irq)
        } else {
            (KVM_IRQCHIP_PIC_SLAVE, irq - 8)
        };
        entries.push(route(irq, chip, pin));
    }
    for gsi in (0..24).filter(|&g| g != 2) {
        entries.push(route(
            gsi,
            KVM_IRQCHIP_IOAPIC,
            if gsi == 0 { 2 } else { gsi },
        ));
    }
    kvm_bindings::KvmIrqRouting::from_entries(&entries)
        .map_err(|_| Error::Unsupported("too many interrupt routes".into()))
}

struct KvmVm {
    vm: VmFd,
    supported: CpuId,
}

impl Vm for KvmVm {
    unsafe fn map_memory(
        &self,
        slot: u32,
        guest_addr: u64,
        host_addr: *mut u8,
        size: u64,
    ) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: guest_addr,
            memory_size: size,
            userspace_addr: host_addr as u64,
        };
        // SAFETY: the caller guarantees the host range stays mapped for the VM's lifetime.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(ioctl_err("KVM_SET_USER_MEMORY_REGION"))
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>> {
        let fd = self
            .vm
            .create_vcpu(u64::from(id))
            .map_err(ioctl_err("KVM_CREATE_VCPU"))?;
        Ok(Box::new(KvmVcpu { fd }))
    }

    fn set_irq_level(&self, gsi: u32, high: bool) -> Result<()> {
        self.vm
            .set_irq_line(gsi, high)
            .map_err(ioctl_err("KVM_IRQ_LINE"))
    }

    fn register_ioevent(&self, addr: u64, fd: &vmm_sys_util::eventfd::EventFd) -> Result<bool> {
        self.vm
            .register_ioevent(
                fd,
                &kvm_ioctls::IoEventAddress::Mmio(addr),
                kvm_ioctls::NoDatamatch,
            )
            .map_err(ioctl_err("KVM_IOEVENTFD"))?;
        Ok(true)
    }

    fn signal_msi(&self, addr: u64, data: u32) -> Result<()> {
        let msi = kvm_bindings::kvm_msi {
            address_lo: addr as u32,
            address_hi: (addr >> 32) as u32,
            data,
            ..Default::default()
        };
        self.vm
            .signal_msi(msi)
            .map(|_| ())
            .map_err(ioctl_err("KVM_SIGNAL_MSI"))
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        Ok(self
            .supported
            .as_slice()
            .iter()
            .map(|e| CpuidEntry {
                function: e.function,
                index: e.index,
                significant_index: e.flags & KVM_CPUID_FLAG_SIGNIFICANT_INDEX != 0,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            })
            .collect())
    }
}

struct KvmVcpu {
    fd: VcpuFd,
}

fn to_kvm_seg(s: &Segment) -> kvm_segment {
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
        unusable: s.unusable.into(),
        padding: 0,
    }
}

fn from_kvm_seg(s: &kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
        unusable: s.unusable != 0,
    }
}

fn to_kvm_dt(t: &Table) -> kvm_dtable {
    kvm_dtable {
        base: t.base,
        limit: t.limit,
        padding: [0; 3],
    }
}

impl Vcpu for KvmVcpu {
    fn set_regs(&mut self, r: &Regs) -> Result<()> {
        let k = kvm_regs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        };
        self.fd.set_regs(&k).map_err(ioctl_err("KVM_SET_REGS"))
    }

    fn regs(&self) -> Result<Regs> {
        let k = self.fd.get_regs().map_err(ioctl_err("KVM_GET_REGS"))?;
        Ok(Regs {
            rax: k.rax,
            rbx: k.rbx,
            rcx: k.rcx,
            rdx: k.rdx,
            rsi: k.rsi,
            rdi: k.rdi,
            rsp: k.rsp,
            rbp: k.rbp,
            r8: k.r8,
            r9: k.r9,
            r10: k.r10,
            r11: k.r11,
            r12: k.r12,
            r13: k.r13,
            r14: k.r14,
            r15: k.r15,
            rip: k.rip,
            rflags: k.rflags,
        })
    }

    fn set_sregs(&mut self, s: &Sregs) -> Result<()> {
        // Start from KVM's current state so fields we don't model (interrupt bitmap) stay sane.
        let mut k: kvm_sregs = self.fd.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
        k.cs = to_kvm_seg(&s.cs);
        k.ds = to_kvm_seg(&s.ds);
        k.es = to_kvm_seg(&s.es);
        k.fs = to_kvm_seg(&s.fs);
        k.gs = to_kvm_seg(&s.gs);
        k.ss = to_kvm_seg(&s.ss);
        k.tr = to_kvm_seg(&s.tr);
        k.ldt = to_kvm_seg(&s.ldt);
        k.gdt = to_kvm_dt(&s.gdt);
        k.idt = to_kvm_dt(&s.idt);
        k.cr0 = s.cr0;
        k.cr2 = s.cr2;
        k.cr3 = s.cr3;
        k.cr4 = s.cr4;
        k.cr8 = s.cr8;
        k.efer = s.efer;
        if s.apic_base != 0 {
            k.apic_base = s.apic_base;
        }
        self.fd.set_sregs(&k).map_err(ioctl_err("KVM_SET_SREGS"))
    }

    fn sregs(&self) -> Result<Sregs> {
        let k = self.fd.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))?;
        Ok(Sregs {
            cs: from_kvm_seg(&k.cs),
            ds: from_kvm_seg(&k.ds),
            es: from_kvm_seg(&k.es),
            fs: from_kvm_seg(&k.fs),
            gs: from_kvm_seg(&k.gs),
            ss: from_kvm_seg(&k.ss),
            tr: from_kvm_seg(&k.tr),
            ldt: from_kvm_seg(&k.ldt),
            gdt: Table {
                base: k.gdt.base,
                limit: k.gdt.limit,
            },
            idt: Table {
                base: k.idt.base,
                limit: k.idt.limit,
            },
            cr0: k.cr0,
            cr2: k.cr2,
            cr3: k.cr3,
            cr4: k.cr4,
            cr8: k.cr8,
            efer: k.efer,
            apic_base: k.apic_base,
        })
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()> {
        let kentries: Vec<kvm_bindings::kvm_cpuid_entry2> = entries
            .iter()
            .map(|e| kvm_bindings::kvm_cpuid_entry2 {
                function: e.function,
                index: e.index,
                flags: if e.significant_index {
                    KVM_CPUID_FLAG_SIGNIFICANT_INDEX
                } else {
                    0
                },
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            })
            .collect();
        let cpuid = CpuId::from_entries(&kentries).map_err(|_| {
            Error::Unsupported(format!("too many CPUID entries ({})", kentries.len()))
        })?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(ioctl_err("KVM_SET_CPUID2"))
    }

    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<()> {
        let entries: Vec<kvm_bindings::kvm_msr_entry> = msrs
            .iter()
            .map(|&(index, data)| kvm_bindings::kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let list = Msrs::from_entries(&entries)
            .map_err(|_| Error::Unsupported(format!("too many MSRs ({})", entries.len())))?;
        let n = self.fd.set_msrs(&list).map_err(ioctl_err("KVM_SET_MSRS"))?;
        if n != entries.len() {
            // KVM stops at the first MSR it refuses; name it.
            let bad = entries.get(n).map(|e| e.index).unwrap_or_default();
            return Err(Error::Unsupported(format!(
                "KVM refused MSR {bad:#x} ({n} of {} set)",
                entries.len()
            )));
        }
        Ok(())
    }

    fn reset_fpu(&mut self) -> Result<()> {
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(ioctl_err("KVM_SET_FPU"))
    }

    fn setup_lapic(&mut self) -> Result<()> {
        const APIC_LVT0: usize = 0x350;
        const APIC_LVT1: usize = 0x360;
        const DM_EXTINT: u32 = 0b111 << 8;
        const DM_NMI: u32 = 0b100 << 8;
        let mut lapic = self.fd.get_lapic().map_err(ioctl_err("KVM_GET_LAPIC"))?;
        for (reg, mode) in [(APIC_LVT0, DM_EXTINT), (APIC_LVT1, DM_NMI)] {
            let bytes: Vec<u8> = lapic.regs[reg..reg + 4].iter().map(|&b| b as u8).collect();
            let mut v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            v = (v & !0x700) | mode;
            for (i, b) in v.to_le_bytes().iter().enumerate() {
                lapic.regs[reg + i] = *b as _;
            }
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(ioctl_err("KVM_SET_LAPIC"))
    }

    fn run(&mut self) -> Result<VcpuExit<'_>> {
        use kvm_ioctls::VcpuExit as K;
        match self.fd.run() {
            Ok(exit) => Ok(match exit {
                K::IoIn(port, data) => VcpuExit::IoIn { port, data },
                K::IoOut(port, data) => VcpuExit::IoOut { port, data },
                K::MmioRead(addr, data) => VcpuExit::MmioRead { addr, data },
                K::MmioWrite(addr, data) => VcpuExit::MmioWrite { addr, data },
                K::Hlt => VcpuExit::Halt,
                K::Shutdown => VcpuExit::Shutdown,
                K::Intr => VcpuExit::Interrupted,
                K::SystemEvent(kind, _) => match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => VcpuExit::Reset,
                    _ => VcpuExit::Shutdown,
                },
                K::FailEntry(reason, cpu) => VcpuExit::Failed(format!(
                    "KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
                )),
                K::InternalError => VcpuExit::Failed(
                    "KVM internal error (often an instruction KVM cannot emulate)".into(),
                ),
                other => VcpuExit::Failed(format!("unexpected KVM exit {other:?}")),
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Ok(VcpuExit::Interrupted)
            }
            Err(e) => Err(ioctl_err("KVM_RUN")(e)),
        }
    }

    fn set_immediate_exit(&mut self, on: bool) {
        self.fd.set_kvm_immediate_exit(on.into());
    }
}
